//! Output: text (coloured on a terminal) or one JSON document, errors with
//! their causes and exit codes, confirmations, and the progress line. Every
//! line goes through `scrub`, so the password of the connection string
//! never reaches the screen, even inside an error from elsewhere.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::{Value, json};

use super::args::ColorChoice;
use super::exit;
use super::view::View;
use crate::report::Warning;
use crate::{Error, Report, RevisionId};

/// Where output goes and how it looks.
pub(crate) struct Ui {
    pub(crate) json: bool,
    color: bool,
    err_color: bool,
    /// Whether to draw progress bars (standard error is a terminal, text mode).
    pub(crate) progress: bool,
    /// How the operator invokes the commands: `pgskein`, `myservice migrate`.
    pub(crate) bin: String,
    secrets: Vec<String>,
}

/// SGR codes.
#[derive(Clone, Copy)]
pub(crate) enum Style {
    Bold = 1,
    Dim = 2,
    Red = 31,
    Green = 32,
    Yellow = 33,
}

impl Ui {
    pub(crate) fn new(json: bool, color: ColorChoice, bin: String) -> Ui {
        let env_ok = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let decide = |tty: bool| match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && env_ok,
        };
        let err_tty = std::io::stderr().is_terminal();
        Ui {
            json,
            color: !json && decide(std::io::stdout().is_terminal()),
            err_color: decide(err_tty),
            progress: !json && err_tty && color != ColorChoice::Never,
            bin,
            secrets: Vec::new(),
        }
    }

    /// Text that must never be printed (a password, raw and decoded).
    pub(crate) fn hide(&mut self, secret: &str) {
        // Very short secrets would blank out ordinary text; they are masked in URLs anyway.
        if secret.len() >= 4 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
        }
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for s in &self.secrets {
            text = text.replace(s.as_str(), "***");
        }
        text
    }

    pub(crate) fn paint(&self, style: Style, text: &str) -> String {
        paint(self.color, style, text)
    }

    pub(crate) fn paint_err(&self, style: Style, text: &str) -> String {
        paint(self.err_color, style, text)
    }

    /// A line of text on standard output (nothing in JSON mode).
    pub(crate) fn line(&self, text: impl AsRef<str>) {
        if !self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", self.scrub(text.as_ref()));
        }
    }

    /// A note on standard error, in both modes.
    pub(crate) fn note(&self, text: impl AsRef<str>) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", self.scrub(text.as_ref()));
    }

    /// What a command found: its JSON document in `--json` mode, its lines
    /// of text otherwise.
    pub(crate) fn show(&self, view: &impl View) {
        if self.json {
            self.json(view.json());
        } else {
            view.text(self);
        }
    }

    /// `key` in bold, padded to a column, then `value`: the lines of
    /// `status`, `preflight` and a run's `current`.
    pub(crate) fn key(&self, key: &str, value: impl AsRef<str>) {
        self.line(format!("{} {}", self.paint(Style::Bold, &format!("{key:<9}")), value.as_ref()));
    }

    /// `key` and a list of ids after `count`, wrapped, a long one summarised.
    pub(crate) fn key_list(&self, key: &str, count: &str, items: &[&str], style: Style) {
        for (i, line) in list_lines(items).into_iter().enumerate() {
            let text = if i == 0 {
                format!("{count}{line}")
            } else {
                format!("{:width$}{line}", "", width = count.len())
            };
            self.key(if i == 0 { key } else { "" }, self.paint(style, &text));
        }
    }

    /// The JSON document on standard output (nothing in text mode).
    pub(crate) fn json(&self, value: Value) {
        if self.json {
            let text = serde_json::to_string_pretty(&value).unwrap_or_default();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", self.scrub(&text));
        }
    }

    /// Prints a failure: `error: ...` and its causes on standard error, or
    /// `{"error": ...}` on standard output in JSON mode.
    pub(crate) fn failure(&self, f: &Failure) {
        if self.json {
            let mut error = json!({
                "kind": f.kind,
                "message": f.message,
                "causes": f.causes,
                "exit_code": f.code,
            });
            if let Some(hint) = &f.hint {
                error["hint"] = json!(hint);
            }
            let mut doc = json!({ "error": error });
            if let Some(r) = &f.report {
                doc["report"] = report_json(r);
            }
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            let _ = writeln!(std::io::stdout().lock(), "{}", self.scrub(&text));
            return;
        }
        if let Some(r) = f.report.as_ref().filter(|r| !r.steps.is_empty()) {
            self.note("done before the failure:");
            for s in &r.steps {
                self.note(format!("  {:<4} {}  {}", s.direction, s.id, ms_text(s.duration)));
            }
        }
        let label = if f.code == exit::REFUSED { "refused" } else { "error" };
        self.note(format!("{}: {}", self.paint_err(Style::Red, label), f.message));
        for c in &f.causes {
            self.note(format!("  caused by: {c}"));
        }
        if let Some(hint) = &f.hint {
            self.note(format!("  hint: {hint}"));
        }
    }

    /// Asks before a destructive command. `--yes` answers for the operator;
    /// without it, standard input and standard error must be terminals.
    pub(crate) fn confirm(&self, yes: bool, question: &str) -> Result<(), Failure> {
        if yes {
            return Ok(());
        }
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(Failure::new(
                exit::REFUSED,
                "needs_confirmation",
                format!(
                    "{question} Not confirmed: standard input is not a terminal, so pass --yes to proceed"
                ),
            ));
        }
        {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{} [y/N] ", self.scrub(question));
            let _ = err.flush();
        }
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Ok(()),
            _ => Err(Failure::new(exit::REFUSED, "not_confirmed", "not confirmed; nothing was changed")),
        }
    }
}

/// `n` and `noun`, plural unless `n` is one: `1 step`, `3 steps`.
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// The ids as text.
pub(crate) fn ids(list: &[RevisionId]) -> Vec<&str> {
    list.iter().map(|i| i.as_str()).collect()
}

/// The items joined by commas, or `empty` when there are none.
pub(crate) fn list_or(list: &[&str], empty: &str) -> String {
    if list.is_empty() { empty.to_owned() } else { list.join(", ") }
}

fn paint(on: bool, style: Style, text: &str) -> String {
    if on { format!("\x1b[{}m{text}\x1b[0m", style as u8) } else { text.to_owned() }
}

/// The lines of a list of ids after `key`: wrapped to about 100 columns, and
/// a long list summarised as its first and last items (`--json` has them all).
pub(crate) fn list_lines(items: &[&str]) -> Vec<String> {
    const WIDTH: usize = 90;
    const SHOWN: usize = 12;
    let count = items.len();
    let mut shown: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    if count > SHOWN {
        let tail = shown.split_off(count - 3);
        shown.truncate(SHOWN - 3);
        shown.push(format!("... {} more ...", count - SHOWN));
        shown.extend(tail);
    }
    let mut lines = vec![String::new()];
    for (i, item) in shown.iter().enumerate() {
        let last = lines.last_mut().expect("one line at least");
        let piece = if i + 1 < shown.len() { format!("{item},") } else { item.clone() };
        if !last.is_empty() && last.len() + 1 + piece.len() > WIDTH {
            lines.push(piece);
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(&piece);
        }
    }
    lines
}

/// Why a command did not succeed, and its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    pub(crate) causes: Vec<String>,
    pub(crate) hint: Option<String>,
    /// What a run did before it failed.
    pub(crate) report: Option<Box<Report>>,
    /// The revision a blocked run stopped at, for the hint naming the command that settles it.
    pub(crate) blocked: Option<Box<str>>,
}

impl Failure {
    pub(crate) fn new(code: u8, kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            code,
            kind,
            message: message.into(),
            causes: Vec::new(),
            hint: None,
            report: None,
            blocked: None,
        }
    }

    /// Adds the hint of a library error that names what to run next, with
    /// the commands' flags and `bin`, how the operator invokes them.
    pub(crate) fn with_command_hint(mut self, bin: &str) -> Failure {
        if self.hint.is_some() {
            return self;
        }
        self.hint = match (self.kind, &self.blocked) {
            ("blocked", Some(id)) => Some(format!(
                "fix the cause, then `{bin} resolve {id} --retry` resumes at the failed statement \
                 (dropping an invalid index it left); or finish or undo its statements by hand and \
                 record which with `{bin} resolve {id} --mark-applied` or `--mark-reverted`"
            )),
            ("checksum_mismatch", _) => Some(format!(
                "restore the files; or, after an intentional edit, record the new checksums with `{bin} repair`"
            )),
            ("multiple_heads", _) => {
                Some(format!("merge them with `{bin} merge --dir <dir>`, or pass --allow-multiple-heads"))
            }
            ("backfill_incomplete", _) => Some(format!(
                "run it with `{bin} backfill run` (after `{bin} backfill resume <name>` if it is paused); \
                 `{bin} backfill status` shows where it is"
            )),
            ("nothing_to_resolve", _) => Some(format!("`{bin} status` lists the blocked revisions")),
            _ => None,
        };
        self
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn caused_by(mut self, err: &dyn std::error::Error) -> Failure {
        let mut cur = Some(err);
        while let Some(e) = cur {
            // tokio-postgres wraps a server error in a bare "db error".
            let text = e.to_string();
            if text != "db error" {
                self.causes.push(text);
            }
            cur = e.source();
        }
        self
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = exit_code(&e);
        let mut f = match &e {
            // The library's message names its API; the hint names the command.
            Error::Blocked { id, state, direction, statement, error, invalid_indexes } => {
                let going = if *direction == crate::report::Direction::Down { " (going down)" } else { "" };
                let at = statement.map(|s| format!("{going} at statement {s}")).unwrap_or(going.to_owned());
                let error = error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
                let indexes = if invalid_indexes.is_empty() {
                    String::new()
                } else {
                    format!("; invalid indexes left behind: {}", invalid_indexes.join(", "))
                };
                let mut f = Failure::new(
                    code,
                    error_kind(&e),
                    format!(
                        "revision {id} is recorded as {state}{at}{error}{indexes}; no run goes past it until it is resolved"
                    ),
                );
                f.blocked = Some(id.as_str().into());
                f
            }
            Error::BackfillIncomplete { revision, backfill, .. } => Failure::new(
                code,
                error_kind(&e),
                format!(
                    "revision {revision} depends on backfill {backfill}, which is not complete; finish the backfill, then run again"
                ),
            ),
            _ => Failure::new(code, error_kind(&e), e.to_string()),
        };
        if let Some(source) = std::error::Error::source(&e) {
            f = f.caused_by(source);
        }
        f.report = e.report().cloned().map(Box::new);
        f
    }
}

/// The exit code of a library error.
pub(crate) fn exit_code(e: &Error) -> u8 {
    match e {
        Error::LockTimeout { .. } | Error::LockRetriesExhausted { .. } => exit::LOCK_TIMEOUT,
        // lock_not_available: a statement gave up waiting for a table lock (lock_timeout).
        _ if e.db_code() == Some("55P03") => exit::LOCK_TIMEOUT,
        Error::Blocked { .. }
        | Error::ChecksumMismatch { .. }
        | Error::Diverged { .. }
        | Error::Ahead { .. } => exit::ATTENTION,
        Error::UnknownTarget { .. }
        | Error::AmbiguousPrefix { .. }
        | Error::AmbiguousTarget { .. }
        | Error::BadRequirement { .. } => exit::USAGE,
        Error::ReleaseRequired { .. } => exit::ATTENTION,
        // A revision waits for a backfill, or a backfill to reset is running: see to the backfill.
        Error::BackfillIncomplete { .. } | Error::BackfillRunning { .. } => exit::ATTENTION,
        _ => exit::ERROR,
    }
}

/// A stable snake_case name of a library error, for `--json`.
pub(crate) fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Io { .. } => "io",
        Error::Parse { .. } => "parse",
        Error::DuplicateRevision { .. } => "duplicate_revision",
        Error::UnknownParent { .. } => "unknown_parent",
        Error::Cycle { .. } => "cycle",
        Error::MultipleHeads { .. } => "multiple_heads",
        Error::NeedsNoTransaction { .. } => "needs_no_transaction",
        Error::UnknownTarget { .. } => "unknown_target",
        Error::AmbiguousPrefix { .. } => "ambiguous_prefix",
        Error::AmbiguousTarget { .. } => "ambiguous_target",
        Error::Irreversible { .. } => "irreversible",
        Error::TargetNotApplied { .. } => "target_not_applied",
        Error::DowngradeBelowUnknown { .. } => "downgrade_below_unknown",
        Error::NoTransactionInSingleMode { .. } => "no_transaction_in_single_mode",
        Error::Pool { .. } => "pool",
        Error::Db { .. } => "database",
        Error::RevisionFailed { .. } => "revision_failed",
        Error::RustRevisionFailed { .. } => "rust_revision_failed",
        Error::Hook { .. } => "hook",
        Error::VerifyFailed { .. } => "verify_failed",
        Error::Blocked { .. } => "blocked",
        Error::ChecksumMismatch { .. } => "checksum_mismatch",
        Error::Diverged { .. } => "diverged",
        Error::Ahead { .. } => "ahead",
        Error::LockTimeout { .. } => "lock_timeout",
        Error::LockNotHeld => "lock_not_held",
        Error::PoolerDetected { .. } => "pooler_detected",
        Error::LeaseLost { .. } => "lease_lost",
        Error::NeedsSession { .. } => "needs_session",
        Error::FormatTooNew { .. } => "format_too_new",
        Error::CorruptLedger { .. } => "corrupt_ledger",
        Error::InvalidSchema { .. } => "invalid_schema",
        Error::NothingToResolve { .. } => "nothing_to_resolve",
        Error::RevisesRepeatable { .. } => "revises_repeatable",
        Error::LockRetriesExhausted { .. } => "lock_retries_exhausted",
        Error::BadRequirement { .. } => "bad_requirement",
        Error::ReleaseRequired { .. } => "release_required",
        Error::InvalidBackfill { .. } => "invalid_backfill",
        Error::DuplicateBackfill { .. } => "duplicate_backfill",
        Error::BackfillUnknownRevision { .. } => "backfill_unknown_revision",
        Error::UnknownBackfill { .. } => "unknown_backfill",
        Error::BackfillIncomplete { .. } => "backfill_incomplete",
        Error::BackfillFailed { .. } => "backfill_failed",
        Error::BackfillRunning { .. } => "backfill_running",
        Error::BackfillTaskCancelled => "backfill_task_cancelled",
        Error::BackfillThroughPooler { .. } => "backfill_through_pooler",
        Error::LockReleased { .. } => "lock_released",
        Error::LedgerDropped { .. } => "ledger_dropped",
        Error::NotRecorded { .. } => "not_recorded",
        Error::LedgerChanged { .. } => "ledger_changed",
        Error::InvalidIndexLeft { .. } => "invalid_index_left",
        Error::OpenTransaction { .. } => "open_transaction",
    }
}

pub(crate) fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub(crate) fn ms_text(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 10_000.0 { format!("{:.1} s", ms / 1000.0) } else { format!("{ms:.1} ms") }
}

pub(crate) fn warning_json(w: &Warning) -> Value {
    match w {
        Warning::Ahead { unknown } => json!({ "kind": "ahead", "revisions": unknown }),
        Warning::Diverged { unknown } => json!({ "kind": "diverged", "revisions": unknown }),
        Warning::ChecksumChanged { changed } => json!({
            "kind": "checksum_changed",
            "revisions": changed.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
        }),
    }
}

pub(crate) fn warning_text(w: &Warning) -> String {
    match w {
        Warning::Ahead { unknown } => {
            format!("the database is ahead of the code: {} applied by a newer release", unknown.join(", "))
        }
        Warning::Diverged { unknown } => format!("the database has diverged: {}", unknown.join(", ")),
        Warning::ChecksumChanged { changed } => {
            let ids: Vec<&str> = changed.iter().map(|i| i.as_str()).collect();
            format!("applied revisions changed since they were applied: {}", ids.join(", "))
        }
    }
}

pub(crate) fn report_json(r: &Report) -> Value {
    json!({
        "steps": r.steps.iter().map(|s| json!({
            "id": s.id.as_str(),
            "direction": s.direction.to_string(),
            "duration_ms": ms(s.duration),
            "stamped": s.stamped,
        })).collect::<Vec<_>>(),
        "warnings": r.warnings.iter().map(warning_json).collect::<Vec<_>>(),
        "fast_path": r.fast_path,
        "lock_wait_ms": ms(r.lock_wait),
        "duration_ms": ms(r.duration),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_says_one_noun_or_several_nouns() {
        assert_eq!(count(0, "warning"), "0 warnings");
        assert_eq!(count(1, "step"), "1 step");
        assert_eq!(count(3, "head"), "3 heads");
    }

    #[test]
    fn a_short_list_stays_on_one_line() {
        assert_eq!(list_lines(&["0001_a", "0002_b"]), ["0001_a, 0002_b"]);
    }

    #[test]
    fn a_long_list_is_summarised_by_its_first_and_last_ids_and_wrapped() {
        let ids: Vec<String> = (1..=346).map(|i| format!("{i:04}_a_revision_with_a_long_name")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let lines = list_lines(&ids);
        let text = lines.join(" ");
        assert!(text.starts_with("0001_a_revision_with_a_long_name, 0002_"), "{text}");
        assert!(text.contains("0009_a_revision_with_a_long_name, ... 334 more ..., 0344_"), "{text}");
        assert!(text.ends_with("0346_a_revision_with_a_long_name"), "{text}");
        assert!(lines.iter().all(|l| l.len() <= 90), "{lines:#?}");
        assert!(text.len() < 600, "{} characters", text.len());
    }

    #[test]
    fn hints_name_the_command_as_the_operator_invokes_it_with_its_flags() {
        let blocked = Failure::from(Error::Blocked {
            id: crate::RevisionId::new("0004_index").unwrap(),
            state: crate::status::BlockedState::Failed,
            direction: crate::report::Direction::Up,
            statement: Some(2),
            error: Some("relation \"x\" does not exist".into()),
            invalid_indexes: vec!["x_idx".into()],
        })
        .with_command_hint("myservice migrate");
        assert_eq!(
            blocked.message,
            "revision 0004_index is recorded as failed at statement 2 (relation \"x\" does not exist); \
             invalid indexes left behind: x_idx; no run goes past it until it is resolved"
        );
        let hint = blocked.hint.unwrap();
        assert!(hint.contains("`myservice migrate resolve 0004_index --retry`"), "{hint}");
        assert!(
            hint.contains("`myservice migrate resolve 0004_index --mark-applied` or `--mark-reverted`"),
            "{hint}"
        );

        let heads = Failure::from(Error::MultipleHeads { heads: Vec::new() }).with_command_hint("pgskein");
        assert!(heads.hint.unwrap().contains("`pgskein merge --dir <dir>`"));
        let given =
            Failure::from(Error::MultipleHeads { heads: Vec::new() }).hint("kept").with_command_hint("x");
        assert_eq!(given.hint.as_deref(), Some("kept"), "a command's own hint stays");
    }
}
