//! Fuzz target: arbitrary text through the SQL front end must return Ok or an error, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = tessera_storage_engine::query::sql::parse(s);
    }
});
