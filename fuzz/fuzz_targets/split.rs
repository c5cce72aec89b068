//! The statement splitter of `transaction none` bodies: no panic, and every
//! statement is non-empty, in order, on a line that exists.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|sql: &str| {
    let lines = sql.matches('\n').count() + 1;
    let mut last_line = 1;
    let mut rest = sql;
    for (text, line) in pgskein::__fuzz::split(sql) {
        assert!(!text.is_empty());
        assert!(line >= last_line && line <= lines, "line {line} of {lines}");
        // Statements come in input order and are pieces of it.
        let at = rest.find(text.as_str()).expect("each statement is a piece of the input, in order");
        rest = &rest[at + text.len()..];
        last_line = line;
    }
});
