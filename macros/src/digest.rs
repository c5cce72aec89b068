//! The set digest, as pgskein's graph computes it over (id, checksum) pairs:
//! the count and the XOR of each pair's SHA-256. The test
//! `embed::embedded_digest_is_the_runtime_fingerprint` compares the two on
//! the example set and on fixtures.

use sha2::{Digest, Sha256};

#[derive(Default)]
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
