//! Arbitrary bytes opened as a Parquet file through the engine's reader: footer, page index and
//! every page of every column. Any input must yield Ok or an error, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(
    init: {
        // The reader turns a panic inside the parquet crate into an error at its boundary
        // (catch_unwind); libfuzzer-sys's hook would abort before that boundary is reached. A
        // silent hook lets the boundary work; a panic that escapes it still aborts the run.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let _ = futures::executor::block_on(tessera_storage_engine::table::reader::verify_file(&bytes, Path::new("fuzz-input.parquet")));
    }
);
