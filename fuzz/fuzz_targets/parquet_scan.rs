//! Arbitrary bytes opened as a Parquet file through the engine's reader: footer, page index and
//! every page of every column. Any input must yield Ok or an error, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let _ = futures::executor::block_on(tessera_storage_engine::reader::verify_file(&bytes, Path::new("fuzz-input.parquet")));
});
