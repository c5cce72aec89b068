//! The header parser: any bytes, as one revision file, must give a revision
//! or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgskein::MigrationSet;

fuzz_target!(|data: &[u8]| {
    match MigrationSet::builder().file("0001_fuzz.sql", data).build() {
        Ok(set) => {
            assert_eq!(set.len(), 1);
            let rev = set.get("0001_fuzz").expect("the revision is named after its file");
            // What a run would execute or record.
            let _ = (rev.up().sql(), rev.down(), rev.verify(), rev.checksum().to_hex());
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
});
