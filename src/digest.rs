//! The set digest: an order-independent digest of (revision id, checksum)
//! pairs, the count and the XOR of each pair's SHA-256, built one revision at
//! a time. The fast path compares the code's with the one the database's
//! triggers keep (`ledger/functions.sql` computes the same text), and
//! `embed_migrations!` computes it at compile time (the proc-macro crate links
//! this file).

use sha2::{Digest, Sha256};

/// The digest of a set of (id, checksum) pairs; its text is `count:hex`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SetDigest {
    count: i64,
    acc: [u8; 32],
}

impl SetDigest {
    pub(crate) fn add(&mut self, id: &str, checksum_hex: &str) {
        self.count += 1;
        let mut h = Sha256::new();
        h.update(id.as_bytes());
        h.update(b"\n");
        h.update(checksum_hex.as_bytes());
        for (a, b) in self.acc.iter_mut().zip(h.finalize()) {
            *a ^= b;
        }
    }
}

impl std::fmt::Display for SetDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.count, crate::id::hex(&self.acc))
    }
}
