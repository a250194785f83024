//! Input files for `import`: Parquet (any writer) and CSV with a header row (schema inferred from
//! the first rows). Each yields Arrow batches; the `TableWriter` normalises their types.

use crate::error::{Error, Result};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const BATCH_ROWS: usize = 65_536;
const CSV_INFER_ROWS: usize = 10_000;

/// An open input file: its schema, row count when known, and its batches.
pub struct Source {
    pub schema: SchemaRef,
    pub rows: Option<u64>,
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch>>>,
}

/// Opens `path` as Parquet (by magic bytes) or CSV.
pub fn open(path: &Path) -> Result<Source> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 4];
    let is_parquet = file.read_exact(&mut magic).is_ok() && &magic == b"PAR1";
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    if is_parquet {
        open_parquet(path, file)
    } else {
        open_csv(path, file)
    }
}

fn open_parquet(path: &Path, file: File) -> Result<Source> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let display = path.to_owned();
    let builder = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ParquetRecordBatchReaderBuilder::try_new(file)
    }))
    .map_err(|_| Error::corrupt(path, "the Parquet reader panicked on this file's metadata"))?
    .map_err(|e| Error::corrupt(path, e))?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| Error::corrupt(path, e))?;
    let batches = reader.map(move |batch| batch.map_err(|e| Error::corrupt(&display, e)));
    Ok(Source {
        schema,
        rows: Some(rows),
        batches: Box::new(batches),
    })
}

fn open_csv(path: &Path, mut file: File) -> Result<Source> {
    use arrow_csv::reader::Format;
    let format = Format::default().with_header(true);
    let (schema, _) = format
        .infer_schema(&mut file, Some(CSV_INFER_ROWS))
        .map_err(|e| Error::Import(format!("{}: cannot read as CSV: {e}", path.display())))?;
    if schema.fields().is_empty() {
        return Err(Error::Import(format!(
            "{}: no columns found (neither Parquet nor CSV with a header)",
            path.display()
        )));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let schema = std::sync::Arc::new(schema);
    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_format(format)
        .with_batch_size(BATCH_ROWS)
        .build(file)
        .map_err(|e| Error::Import(format!("{}: {e}", path.display())))?;
    let display = path.to_owned();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    // The CSV reader refuses a value that does not parse as its column's inferred type (it never
    // turns it into NULL); its message names the column by position only.
    let batches = reader.map(move |batch| {
        batch.map_err(|e| {
            Error::Import(format!(
                "{}: {}",
                display.display(),
                name_csv_column(&e.to_string(), &names)
            ))
        })
    });
    Ok(Source {
        schema,
        rows: None,
        batches: Box::new(batches),
    })
}

/// Adds the column's name where arrow-csv names it by position ("column 3 at line 17").
fn name_csv_column(message: &str, names: &[String]) -> String {
    for (index, name) in names.iter().enumerate() {
        let position = format!("column {index} at line");
        if message.contains(&position) {
            return message.replacen(
                &position,
                &format!("column {name} (number {index}) at line"),
                1,
            );
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_errors_name_the_column() {
        let names = vec!["id".to_owned(), "a1".to_owned()];
        let message = "Error while parsing value 'x' as type 'Int64' for column 1 at line 7.";
        assert_eq!(
            name_csv_column(message, &names),
            "Error while parsing value 'x' as type 'Int64' for column a1 (number 1) at line 7."
        );
        assert_eq!(name_csv_column("other", &names), "other");
    }
}
