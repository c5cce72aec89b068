//! A snapshot of a database's schema read from the catalogs, and the
//! difference between two snapshots, grouped by object.
//!
//! Invariant: a snapshot holds no OIDs, sizes, counters or data, only what a
//! migration's down section is expected to restore, rendered by PostgreSQL's
//! own `pg_get_*def` functions with `search_path` set to `pg_catalog` so that
//! every name is schema-qualified whatever the session's settings.

use std::collections::BTreeMap;
use std::fmt;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::quote::quote_literal;

/// Rows of (object, item, value). An object's own properties are the item
/// `""`. Extension members are left out (their extension stands for them),
/// and so are objects that exist only as part of another: the identity
/// sequences of columns (the column says `identity`), array and multirange
/// types, range constructors.
const CATALOG: &str = r#"
WITH ns AS (
    SELECT n.oid, n.nspname
      FROM pg_namespace n
     WHERE n.nspname <> ALL (EXCLUDED)
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
),
member AS (
    SELECT d.classid, d.objid FROM pg_depend d WHERE d.deptype = 'e'
),
rel AS (
    SELECT c.oid, c.relkind, c.relname, n.nspname,
           CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'f' THEN 'foreign table'
                          WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                          ELSE 'type' END
             || ' ' || format('%I.%I', n.nspname, c.relname) AS object
      FROM pg_class c JOIN ns n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'c')
       AND NOT EXISTS (SELECT 1 FROM member e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid)
       AND NOT (c.relkind = 'S' AND EXISTS (
               SELECT 1 FROM pg_depend d
                WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i'))
),
typ AS (
    SELECT t.*, 'type ' || format('%I.%I', n.nspname, t.typname) AS object
      FROM pg_type t JOIN ns n ON n.oid = t.typnamespace
     WHERE t.typtype IN ('b', 'c', 'd', 'e', 'r')
       AND NOT EXISTS (SELECT 1 FROM pg_type a WHERE a.typarray = t.oid)
       AND NOT (t.typtype = 'c' AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) <> 'c')
       AND NOT EXISTS (SELECT 1 FROM member e WHERE e.classid = 'pg_type'::regclass AND e.objid = t.oid)
),
fn AS (
    SELECT p.oid, p.prokind, p.prorettype,
           CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate ' ELSE 'function ' END
             || format('%I.%I', n.nspname, p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')'
             AS object
      FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace
     WHERE NOT EXISTS (SELECT 1 FROM member e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid)
       -- A range type's constructors come and go with it.
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'i')
)
SELECT 'schema ' || format('%I', nspname), '', '' FROM ns
UNION ALL
SELECT 'schema ' || format('%I', nspname), 'comment', obj_description(oid, 'pg_namespace')
  FROM ns WHERE obj_description(oid, 'pg_namespace') IS NOT NULL
UNION ALL
SELECT r.object, '', concat_ws(' ',
           CASE c.relpersistence WHEN 'u' THEN 'unlogged' END,
           CASE WHEN c.relkind = 'p' THEN 'partition by ' || pg_get_partkeydef(c.oid) END,
           CASE WHEN c.relispartition THEN
               'partition of ' || (SELECT format('%I.%I', pn.nspname, pc.relname)
                                     FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
                                     JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                                    WHERE i.inhrelid = c.oid)
               || ' ' || pg_get_expr(c.relpartbound, c.oid) END,
           CASE WHEN c.relrowsecurity THEN 'row level security' END,
           CASE WHEN c.relforcerowsecurity THEN 'forced' END,
           CASE WHEN c.reloptions IS NOT NULL THEN 'with (' || array_to_string(c.reloptions, ', ') || ')' END)
  FROM rel r JOIN pg_class c ON c.oid = r.oid
 WHERE r.relkind <> 'c'
UNION ALL
SELECT r.object, 'inherits', string_agg(format('%I.%I', pn.nspname, pc.relname), ', ' ORDER BY i.inhseqno)
  FROM rel r JOIN pg_class c ON c.oid = r.oid
  JOIN pg_inherits i ON i.inhrelid = r.oid
  JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
 WHERE NOT c.relispartition
 GROUP BY r.object
UNION ALL
SELECT r.object, 'comment', obj_description(r.oid, 'pg_class')
  FROM rel r WHERE obj_description(r.oid, 'pg_class') IS NOT NULL
UNION ALL
SELECT r.object, 'definition', pg_get_viewdef(r.oid) FROM rel r WHERE r.relkind IN ('v', 'm')
UNION ALL
SELECT r.object, 'definition',
       format('%s start %s increment %s minvalue %s maxvalue %s cache %s', format_type(s.seqtypid, NULL),
              s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache)
       || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END
  FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
UNION ALL
SELECT r.object, 'owned by', format('%I.%I.%I', pn.nspname, pc.relname, a.attname)
  FROM rel r
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.deptype = 'a'
                  AND d.refclassid = 'pg_class'::regclass
  JOIN pg_class pc ON pc.oid = d.refobjid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE r.relkind = 'S'
UNION ALL
SELECT r.object, 'column ' || format('%I', a.attname), concat_ws(' ',
           format_type(a.atttypid, a.atttypmod),
           CASE WHEN a.attcollation <> t.typcollation THEN
               'collate ' || (SELECT format('%I.%I', cn.nspname, co.collname)
                                FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                               WHERE co.oid = a.attcollation) END,
           CASE WHEN a.attnotnull THEN 'not null' END,
           CASE a.attidentity WHEN 'a' THEN 'generated always as identity'
                              WHEN 'd' THEN 'generated by default as identity' END,
           CASE WHEN a.attgenerated = 's' THEN 'generated always as (' || pg_get_expr(ad.adbin, ad.adrelid) || ') stored'
                WHEN ad.adbin IS NOT NULL THEN 'default ' || pg_get_expr(ad.adbin, ad.adrelid) END)
  FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE r.relkind <> 'S' AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT r.object, 'column ' || format('%I', a.attname) || ' comment', col_description(r.oid, a.attnum)
  FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid
 WHERE r.relkind <> 'S' AND a.attnum > 0 AND NOT a.attisdropped AND col_description(r.oid, a.attnum) IS NOT NULL
UNION ALL
SELECT r.object, 'index ' || format('%I', ic.relname),
       pg_get_indexdef(i.indexrelid)
       || CASE WHEN NOT i.indisvalid THEN ' (invalid)' ELSE '' END
       || CASE WHEN i.indisclustered THEN ' (clustered)' ELSE '' END
  FROM rel r JOIN pg_index i ON i.indrelid = r.oid JOIN pg_class ic ON ic.oid = i.indexrelid
UNION ALL
SELECT r.object, 'index ' || format('%I', ic.relname) || ' comment', obj_description(ic.oid, 'pg_class')
  FROM rel r JOIN pg_index i ON i.indrelid = r.oid JOIN pg_class ic ON ic.oid = i.indexrelid
 WHERE obj_description(ic.oid, 'pg_class') IS NOT NULL
UNION ALL
SELECT r.object, 'constraint ' || format('%I', k.conname), pg_get_constraintdef(k.oid)
  FROM rel r JOIN pg_constraint k ON k.conrelid = r.oid
UNION ALL
SELECT r.object, 'constraint ' || format('%I', k.conname) || ' comment', obj_description(k.oid, 'pg_constraint')
  FROM rel r JOIN pg_constraint k ON k.conrelid = r.oid
 WHERE obj_description(k.oid, 'pg_constraint') IS NOT NULL
UNION ALL
SELECT r.object, 'trigger ' || format('%I', g.tgname),
       pg_get_triggerdef(g.oid)
       || CASE g.tgenabled WHEN 'D' THEN ' (disabled)' WHEN 'R' THEN ' (enabled replica)'
                           WHEN 'A' THEN ' (enabled always)' ELSE '' END
  FROM rel r JOIN pg_trigger g ON g.tgrelid = r.oid
 WHERE NOT g.tgisinternal
UNION ALL
SELECT r.object, 'trigger ' || format('%I', g.tgname) || ' comment', obj_description(g.oid, 'pg_trigger')
  FROM rel r JOIN pg_trigger g ON g.tgrelid = r.oid
 WHERE NOT g.tgisinternal AND obj_description(g.oid, 'pg_trigger') IS NOT NULL
UNION ALL
SELECT r.object, 'rule ' || format('%I', w.rulename), pg_get_ruledef(w.oid)
  FROM rel r JOIN pg_rewrite w ON w.ev_class = r.oid
 WHERE w.rulename <> '_RETURN'
UNION ALL
SELECT r.object, 'policy ' || format('%I', p.polname), concat_ws(' ',
           CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
           'for ' || CASE p.polcmd WHEN 'r' THEN 'select' WHEN 'a' THEN 'insert' WHEN 'w' THEN 'update'
                                   WHEN 'd' THEN 'delete' ELSE 'all' END,
           'to ' || (SELECT string_agg(CASE WHEN o = 0 THEN 'public' ELSE o::regrole::text END, ', '
                                       ORDER BY CASE WHEN o = 0 THEN 'public' ELSE o::regrole::text END)
                       FROM unnest(p.polroles) o),
           'using (' || pg_get_expr(p.polqual, p.polrelid) || ')',
           'with check (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')')
  FROM rel r JOIN pg_policy p ON p.polrelid = r.oid
UNION ALL
SELECT f.object, 'definition',
       CASE WHEN f.prokind = 'a' THEN
           (SELECT format('returns %s sfunc %s stype %s', format_type(f.prorettype, NULL),
                          a.aggtransfn::regproc, format_type(a.aggtranstype, NULL))
              FROM pg_aggregate a WHERE a.aggfnoid = f.oid)
       ELSE pg_get_functiondef(f.oid) END
  FROM fn f
UNION ALL
SELECT f.object, 'comment', obj_description(f.oid, 'pg_proc')
  FROM fn f WHERE obj_description(f.oid, 'pg_proc') IS NOT NULL
UNION ALL
SELECT t.object, '',
       CASE t.typtype
           WHEN 'e' THEN 'enum'
           WHEN 'c' THEN 'composite'
           WHEN 'b' THEN 'base'
           WHEN 'd' THEN concat_ws(' ',
               'domain over ' || format_type(t.typbasetype, t.typtypmod),
               CASE WHEN t.typcollation <> (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype) THEN
                   'collate ' || (SELECT format('%I.%I', cn.nspname, co.collname)
                                    FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                   WHERE co.oid = t.typcollation) END,
               CASE WHEN t.typnotnull THEN 'not null' END,
               'default ' || t.typdefault)
           WHEN 'r' THEN (SELECT concat_ws(' ',
               'range of ' || format_type(g.rngsubtype, NULL),
               CASE WHEN g.rngcanonical <> 0 THEN 'canonical ' || g.rngcanonical::regproc::text END,
               CASE WHEN g.rngsubdiff <> 0 THEN 'subtype_diff ' || g.rngsubdiff::regproc::text END)
               FROM pg_range g WHERE g.rngtypid = t.oid)
       END
  FROM typ t
UNION ALL
SELECT t.object, 'labels', string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
  FROM typ t JOIN pg_enum e ON e.enumtypid = t.oid
 GROUP BY t.object
UNION ALL
SELECT t.object, 'constraint ' || format('%I', k.conname), pg_get_constraintdef(k.oid)
  FROM typ t JOIN pg_constraint k ON k.contypid = t.oid
UNION ALL
SELECT t.object, 'comment', obj_description(t.oid, 'pg_type')
  FROM typ t WHERE obj_description(t.oid, 'pg_type') IS NOT NULL
UNION ALL
SELECT 'collation ' || format('%I.%I', n.nspname, c.collname), '', concat_ws(' ',
           'provider ' || c.collprovider::text,
           'locale ' || coalesce(to_jsonb(c) ->> 'colllocale', to_jsonb(c) ->> 'colliculocale'),
           'lc_collate ' || c.collcollate, 'lc_ctype ' || c.collctype,
           CASE WHEN NOT c.collisdeterministic THEN 'nondeterministic' END)
  FROM pg_collation c JOIN ns n ON n.oid = c.collnamespace
 WHERE NOT EXISTS (SELECT 1 FROM member e WHERE e.classid = 'pg_collation'::regclass AND e.objid = c.oid)
UNION ALL
SELECT 'extension ' || format('%I', x.extname), '',
       'version ' || x.extversion || ' in schema ' || format('%I', n.nspname)
  FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
UNION ALL
SELECT 'event trigger ' || format('%I', v.evtname), '', concat_ws(' ',
           'on ' || v.evtevent,
           CASE WHEN v.evttags IS NOT NULL THEN 'when tag in (' || array_to_string(v.evttags, ', ') || ')' END,
           'execute ' || v.evtfoid::regproc::text,
           CASE v.evtenabled WHEN 'D' THEN '(disabled)' WHEN 'R' THEN '(enabled replica)'
                             WHEN 'A' THEN '(enabled always)' END)
  FROM pg_event_trigger v
 WHERE NOT EXISTS (SELECT 1 FROM member e WHERE e.classid = 'pg_event_trigger'::regclass AND e.objid = v.oid)
"#;

/// The schema of a database as its catalogs describe it: schemas, tables and
/// their columns (type, collation, nullability, default, identity,
/// generation), indexes, constraints, triggers, rules and row-level security
/// policies; views and materialized views with their definitions; sequences;
/// functions, procedures and aggregates; types (enums with their labels,
/// domains with their constraints, composite and range types); collations;
/// extensions and event triggers; and comments on all of these.
///
/// Not included: pgskein's bookkeeping schema, objects that belong to an
/// extension (the extension and its version stand for them), owners and
/// privileges, tablespaces, statistics, and data. Column order is not
/// compared either: re-adding a dropped column puts it last, which a down
/// section cannot avoid.
///
/// ```no_run
/// # async fn example(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
/// use pgskein::testing::Snapshot;
///
/// let before = Snapshot::take(client).await?;
/// client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await?;
/// let after = Snapshot::take(client).await?;
/// let diff = before.diff(&after);
/// assert!(diff.to_string().contains("+ column id: integer not null"), "{diff}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// object -> item -> value; the object's own properties are item "".
    objects: BTreeMap<String, BTreeMap<String, String>>,
}

impl Snapshot {
    /// Reads the schema of the database `client` is connected to, leaving
    /// out the default bookkeeping schema `pgskein`.
    pub async fn take(client: &Client) -> Result<Snapshot, tokio_postgres::Error> {
        Self::take_excluding(client, &[crate::Config::default().schema_name()]).await
    }

    /// Reads the schema, leaving out the given schemas (for instance the
    /// bookkeeping schema of a [`Config`](crate::Config) with another name).
    ///
    /// One round trip. `search_path` is set to `pg_catalog` while the
    /// catalogs are read and restored afterwards; the statements run in the
    /// caller's transaction if one is open.
    pub async fn take_excluding(
        client: &Client,
        schemas: &[&str],
    ) -> Result<Snapshot, tokio_postgres::Error> {
        let excluded = if schemas.is_empty() {
            "ARRAY[]::text[]".to_owned()
        } else {
            let items: Vec<String> = schemas.iter().map(|s| quote_literal(s)).collect();
            format!("ARRAY[{}]::text[]", items.join(", "))
        };
        // The simple protocol runs these as one implicit transaction (or in
        // the caller's), so a failure also undoes the search_path change.
        let sql = format!(
            "SELECT set_config('pgskein.snapshot_search_path', current_setting('search_path'), false); \
             SELECT set_config('search_path', 'pg_catalog', false); \
             {}; \
             SELECT set_config('search_path', current_setting('pgskein.snapshot_search_path'), false);",
            CATALOG.trim().replace("EXCLUDED", &excluded)
        );
        let mut snapshot = Snapshot::default();
        for message in client.simple_query(&sql).await? {
            if let SimpleQueryMessage::Row(row) = message {
                if row.len() == 3 {
                    let (Some(object), Some(item)) = (row.get(0), row.get(1)) else { continue };
                    let value = row.get(2).unwrap_or_default();
                    snapshot.insert(object, item, value);
                }
            }
        }
        Ok(snapshot)
    }

    fn insert(&mut self, object: &str, item: &str, value: &str) {
        self.objects.entry(object.to_owned()).or_default().insert(item.to_owned(), value.to_owned());
    }

    /// The objects, sorted: `table public.users`, `type public.mood`,
    /// `function public.f(integer)`, `extension pgcrypto`, ...
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.objects.keys().map(String::as_str)
    }

    /// Whether the snapshot has this object.
    pub fn contains(&self, object: &str) -> bool {
        self.objects.contains_key(object)
    }

    /// An object's items as (item, value) pairs, sorted by item: `column
    /// email` → `text not null`, `index users_pkey` → its definition, ...
    /// The object's own properties (e.g. `unlogged`, `enum`) are the item `""`.
    pub fn items(&self, object: &str) -> impl Iterator<Item = (&str, &str)> {
        self.objects.get(object).into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are no objects at all.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// What changed from `self` to `after`, object by object.
    ///
    /// ```
    /// use pgskein::testing::Snapshot;
    /// let same = Snapshot::default();
    /// assert!(same.diff(&Snapshot::default()).is_empty());
    /// ```
    pub fn diff(&self, after: &Snapshot) -> SnapshotDiff {
        let empty = BTreeMap::new();
        let mut objects = Vec::new();
        let mut names: Vec<&String> = self.objects.keys().chain(after.objects.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let (a, b) = (self.objects.get(name), after.objects.get(name));
            let change = match (a, b) {
                (Some(_), None) => ObjectChange::Removed,
                (None, Some(_)) => ObjectChange::Added,
                _ => ObjectChange::Changed,
            };
            let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
            let mut items = Vec::new();
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (before, after) = (a.get(key), b.get(key));
                if before != after {
                    items.push(ItemDiff {
                        item: key.clone(),
                        before: before.cloned(),
                        after: after.cloned(),
                    });
                }
            }
            if !items.is_empty() {
                objects.push(ObjectDiff { object: name.clone(), change, items });
            }
        }
        SnapshotDiff { objects }
    }
}

impl fmt::Display for Snapshot {
    /// One object per paragraph: its name, then `item: value` lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (object, items) in &self.objects {
            writeln!(f, "{object}")?;
            for (item, value) in items {
                write_item(f, "  ", ' ', item, value)?;
            }
        }
        Ok(())
    }
}

/// The difference between two [`Snapshot`]s, from [`Snapshot::diff`]. Empty
/// when they are equal.
///
/// Its `Display` groups the changes by object:
///
/// ```text
/// table public.items (changed)
///   - index items_name_idx: CREATE INDEX items_name_idx ON public.items USING btree (name)
///   ~ column price
///       - numeric(10,2) not null default 0
///       + numeric(10,2) not null
/// type public.mood (changed)
///   ~ labels
///       - 'happy', 'sad'
///       + 'happy', 'sad', 'meh'
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotDiff {
    /// The objects that differ, sorted by name.
    pub objects: Vec<ObjectDiff>,
}

impl SnapshotDiff {
    /// Whether the snapshots are equal.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// One object that differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectDiff {
    /// The object, e.g. `table public.users`.
    pub object: String,
    /// Whether it appeared, disappeared or changed.
    pub change: ObjectChange,
    /// Its items that differ, sorted.
    pub items: Vec<ItemDiff>,
}

/// How an object differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectChange {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// In both, with different items.
    Changed,
}

/// One item of an object that differs: a column, an index, a constraint, ...
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ItemDiff {
    /// The item, e.g. `column email` or `index users_pkey`; `""` for the
    /// object's own properties.
    pub item: String,
    /// Its value in the first snapshot, if there.
    pub before: Option<String>,
    /// Its value in the second snapshot, if there.
    pub after: Option<String>,
}

impl fmt::Display for SnapshotDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for object in &self.objects {
            let word = match object.change {
                ObjectChange::Added => "added",
                ObjectChange::Removed => "removed",
                ObjectChange::Changed => "changed",
            };
            writeln!(f, "{} ({word})", object.object)?;
            for item in &object.items {
                match (&item.before, &item.after) {
                    (Some(value), None) => write_item(f, "  ", '-', &item.item, value)?,
                    (None, Some(value)) => write_item(f, "  ", '+', &item.item, value)?,
                    (Some(before), Some(after)) => {
                        writeln!(f, "  ~ {}", label(&item.item))?;
                        write_change(f, before, after)?;
                    }
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }
}

fn label(item: &str) -> &str {
    if item.is_empty() { "properties" } else { item }
}

/// `<indent><mark> item: value`, with a multi-line value's further lines
/// indented under it.
fn write_item(f: &mut fmt::Formatter<'_>, indent: &str, mark: char, item: &str, value: &str) -> fmt::Result {
    // A plain table, schema or extension has no properties worth a line.
    if item.is_empty() && value.is_empty() {
        return Ok(());
    }
    let item = label(item);
    let mut lines = value.lines();
    match lines.next() {
        None => writeln!(f, "{indent}{mark} {item}"),
        Some(first) => {
            writeln!(f, "{indent}{mark} {item}: {first}")?;
            for line in lines {
                writeln!(f, "{indent}{mark}     {line}")?;
            }
            Ok(())
        }
    }
}

/// A changed value: `- old` / `+ new`, or for multi-line values (function
/// bodies, view definitions) a line diff with unchanged lines marked ` `.
fn write_change(f: &mut fmt::Formatter<'_>, before: &str, after: &str) -> fmt::Result {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    if a.len() <= 1 && b.len() <= 1 {
        writeln!(f, "      - {before}")?;
        return writeln!(f, "      + {after}");
    }
    for (mark, line) in line_diff(&a, &b) {
        writeln!(f, "      {mark} {line}")?;
    }
    Ok(())
}

/// A longest-common-subsequence line diff. Definitions are short, so the
/// quadratic table is fine.
fn line_diff<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(char, &'a str)> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Removals before additions, as diff prints them.
            out.push(('-', a[i]));
            i += 1;
        } else {
            out.push(('+', b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(rows: &[(&str, &str, &str)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (o, i, v) in rows {
            s.insert(o, i, v);
        }
        s
    }

    #[test]
    fn equal_snapshots_have_an_empty_diff() {
        let a = snap(&[("table public.t", "", ""), ("table public.t", "column id", "integer")]);
        assert!(a.diff(&a.clone()).is_empty());
        assert_eq!(a.diff(&a).to_string(), "");
    }

    #[test]
    fn diff_groups_added_removed_and_changed_items_by_object() {
        let before = snap(&[
            ("table public.items", "", ""),
            ("table public.items", "column price", "numeric not null default 0"),
            (
                "table public.items",
                "index items_name_idx",
                "CREATE INDEX items_name_idx ON public.items (name)",
            ),
            ("table public.gone", "", ""),
            ("table public.gone", "column id", "integer"),
        ]);
        let after = snap(&[
            ("table public.items", "", ""),
            ("table public.items", "column price", "numeric not null"),
            ("type public.mood", "", "enum"),
            ("type public.mood", "labels", "'a'"),
        ]);
        let diff = before.diff(&after);
        assert_eq!(
            diff.to_string(),
            "table public.gone (removed)\n\
             \x20 - column id: integer\n\
             table public.items (changed)\n\
             \x20 ~ column price\n\
             \x20     - numeric not null default 0\n\
             \x20     + numeric not null\n\
             \x20 - index items_name_idx: CREATE INDEX items_name_idx ON public.items (name)\n\
             type public.mood (added)\n\
             \x20 + properties: enum\n\
             \x20 + labels: 'a'\n"
        );
        assert_eq!(diff.objects.len(), 3);
        assert_eq!(diff.objects[0].change, ObjectChange::Removed);
        assert_eq!(diff.objects[2].change, ObjectChange::Added);
    }

    #[test]
    fn multi_line_values_get_a_line_diff() {
        let before = snap(&[("function public.f()", "definition", "BEGIN\n  RETURN 1;\nEND")]);
        let after = snap(&[("function public.f()", "definition", "BEGIN\n  RETURN 2;\nEND")]);
        assert_eq!(
            before.diff(&after).to_string(),
            "function public.f() (changed)\n\
             \x20 ~ definition\n\
             \x20       BEGIN\n\
             \x20     -   RETURN 1;\n\
             \x20     +   RETURN 2;\n\
             \x20       END\n"
        );
    }

    #[test]
    fn line_diff_keeps_the_common_lines_in_order() {
        let d = line_diff(&["a", "b", "c", "d"], &["a", "c", "x", "d"]);
        assert_eq!(d, [(' ', "a"), ('-', "b"), (' ', "c"), ('+', "x"), (' ', "d")]);
    }
}
