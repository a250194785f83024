//! Input files for `import` and `ingest`: Parquet (any writer), CSV with a header row and JSON
//! lines (one object per line); the schemas of CSV and JSON lines are inferred from the first
//! rows (JSON lines: fields in name order, as arrow-json gives them). Each yields Arrow batches;
//! the `TableWriter` normalises their types.

use crate::error::{Error, Result};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const BATCH_ROWS: usize = 65_536;
const CSV_INFER_ROWS: usize = 10_000;
const JSON_INFER_ROWS: usize = 10_000;
/// Bytes at the start of a file looked at to tell its format.
const SNIFF_BYTES: usize = 4096;

/// An open input file: its schema, row count when known, and its batches.
pub struct Source {
    pub schema: SchemaRef,
    pub rows: Option<u64>,
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch>>>,
    /// Bytes of the file the batches have consumed so far (read ahead by a buffer), for progress
    /// where the row count is not known up front: CSV and JSON lines; `None` for Parquet.
    pub bytes_read: Option<Arc<AtomicU64>>,
}

/// The format of an input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    JsonLines,
}

/// Tells the format of `path` from its first bytes `head`: Parquet by its magic bytes, JSON lines
/// by extension (`.json`, `.jsonl`, `.ndjson`) or, when the extension is not `.csv`, by a first
/// non-blank byte `{`; anything else is read as CSV.
pub fn detect(path: &Path, head: &[u8]) -> Format {
    if head.starts_with(b"PAR1") {
        return Format::Parquet;
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("json" | "jsonl" | "ndjson") => Format::JsonLines,
        Some("csv") => Format::Csv,
        _ if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => Format::JsonLines,
        _ => Format::Csv,
    }
}

/// Opens `path` as Parquet, CSV or JSON lines (see `detect`).
pub fn open(path: &Path) -> Result<Source> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut file)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    match detect(path, &head) {
        Format::Parquet => open_parquet(path, file),
        Format::Csv => open_csv(path, file),
        Format::JsonLines => open_json_lines(path, file),
    }
}

fn open_parquet(path: &Path, file: File) -> Result<Source> {
    use parquet::arrow::arrow_reader::{
        ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    };
    let display = path.to_owned();
    let builder = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())?;
        let metadata = match int96_as_micros(&metadata) {
            Some(hint) => ArrowReaderMetadata::try_new(
                metadata.metadata().clone(),
                ArrowReaderOptions::new().with_schema(hint),
            )?,
            None => metadata,
        };
        Ok::<_, parquet::errors::ParquetError>(ParquetRecordBatchReaderBuilder::new_with_metadata(
            file, metadata,
        ))
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
        bytes_read: None,
    })
}

/// The file's Arrow schema with its legacy INT96 timestamp columns (Impala, Spark, older
/// pyarrow) read as microseconds, or `None` when it has none. The reader's default for INT96 is
/// nanoseconds in an i64, which wraps silently before 1677 and after 2262; in microseconds every
/// INT96 date fits, and the reader floors the nanoseconds of the day (never negative), so a
/// value keeps the microsecond it falls in (1969-12-31 23:59:59.999999999 stays in 1969).
fn int96_as_micros(
    metadata: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
) -> Option<SchemaRef> {
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let schema = metadata.schema();
    let roots = metadata
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields();
    if roots.len() != schema.fields().len() {
        return None;
    }
    let mut changed = false;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(roots)
        .map(|(field, root)| {
            let int96 =
                root.is_primitive() && root.get_physical_type() == parquet::basic::Type::INT96;
            match field.data_type() {
                DataType::Timestamp(_, zone) if int96 => {
                    changed = true;
                    field
                        .as_ref()
                        .clone()
                        .with_data_type(DataType::Timestamp(TimeUnit::Microsecond, zone.clone()))
                }
                _ => field.as_ref().clone(),
            }
        })
        .collect();
    changed.then(|| Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

fn open_csv(path: &Path, mut file: File) -> Result<Source> {
    let format = arrow_csv::reader::Format::default().with_header(true);
    let (schema, _) = format
        .infer_schema(&mut file, Some(CSV_INFER_ROWS))
        .map_err(|e| Error::Import(format!("{}: cannot read as CSV: {e}", path.display())))?;
    if schema.fields().is_empty() {
        return Err(Error::Import(format!(
            "{}: no columns found (neither Parquet, JSON lines nor CSV with a header)",
            path.display()
        )));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let schema = Arc::new(schema);
    let (file, bytes_read) = Counted::new(file);
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
        bytes_read: Some(bytes_read),
    })
}

fn open_json_lines(path: &Path, file: File) -> Result<Source> {
    let cannot = |e: &dyn std::fmt::Display| {
        Error::Import(format!(
            "{}: cannot read as JSON lines (one object per line): {e}",
            path.display()
        ))
    };
    let mut reader = BufReader::new(file);
    // Reads the first rows, then rewinds.
    let (schema, _) =
        arrow_json::reader::infer_json_schema_from_seekable(&mut reader, Some(JSON_INFER_ROWS))
            .map_err(|e| cannot(&e))?;
    if schema.fields().is_empty() {
        return Err(cannot(&"no fields found in its first objects"));
    }
    let schema = Arc::new(schema);
    let (file, bytes_read) = Counted::new(reader.into_inner());
    let reader = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH_ROWS)
        .build(BufReader::new(file))
        .map_err(|e| cannot(&e))?;
    let display = path.to_owned();
    // A value of a type other than the one inferred from the first rows is an error (not NULL).
    let batches = reader
        .map(move |batch| batch.map_err(|e| Error::Import(format!("{}: {e}", display.display()))));
    Ok(Source {
        schema,
        rows: None,
        batches: Box::new(batches),
        bytes_read: Some(bytes_read),
    })
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Counted<R> {
    fn new(inner: R) -> (Counted<R>, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        let counted = Counted {
            inner,
            count: count.clone(),
        };
        (counted, count)
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.count.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
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

    #[test]
    fn formats_are_told_by_magic_extension_or_first_byte() {
        let detect = |name: &str, head: &[u8]| detect(Path::new(name), head);
        assert_eq!(detect("a.json", b"PAR1...."), Format::Parquet);
        for name in ["a.json", "a.JSONL", "dir/a.ndjson"] {
            assert_eq!(detect(name, b"id,name\n"), Format::JsonLines, "{name}");
        }
        assert_eq!(detect("a.txt", b" \n\t{\"id\": 1}"), Format::JsonLines);
        assert_eq!(detect("no-extension", b"{}"), Format::JsonLines);
        // An explicit .csv stays CSV, whatever its first byte; so does anything else.
        assert_eq!(detect("a.csv", b"{x},y\n"), Format::Csv);
        assert_eq!(detect("a.txt", b"id,name\n"), Format::Csv);
        assert_eq!(detect("empty", b""), Format::Csv);
    }

    #[test]
    fn json_lines_are_read_with_inferred_types() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float64Type, Int64Type};
        use arrow_schema::DataType;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.data");
        let text = "\n  {\"id\": 1, \"name\": \"a\", \"amount\": 1.5, \"ok\": true}\n\
                    {\"id\": 2, \"name\": \"b\", \"ok\": false}\n\
                    {\"amount\": 3, \"id\": 3, \"name\": null}\n";
        std::fs::write(&path, text).unwrap();
        let source = open(&path).unwrap();
        let fields: Vec<(String, DataType)> = source
            .schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        // arrow-json orders the inferred fields by name.
        assert_eq!(
            fields,
            vec![
                ("amount".into(), DataType::Float64),
                ("id".into(), DataType::Int64),
                ("name".into(), DataType::Utf8),
                ("ok".into(), DataType::Boolean),
            ]
        );
        assert_eq!(source.rows, None);
        let counter = source.bytes_read.clone().unwrap();
        let batches: Vec<RecordBatch> = source.batches.collect::<Result<_>>().unwrap();
        let batch = arrow_select::concat::concat_batches(&source.schema, &batches).unwrap();
        assert_eq!(batch.num_rows(), 3);
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let ids = column("id");
        assert_eq!(ids.as_primitive::<Int64Type>().values(), &[1, 2, 3]);
        let amounts = column("amount");
        assert_eq!(
            amounts
                .as_primitive::<Float64Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(1.5), None, Some(3.0)]
        );
        assert_eq!(column("name").null_count(), 1);
        assert_eq!(counter.load(Ordering::Relaxed), text.len() as u64);
    }

    #[test]
    fn a_json_array_is_not_json_lines_and_the_error_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("array.json");
        std::fs::write(&path, "[{\"id\": 1}, {\"id\": 2}]\n").unwrap();
        let message = match open(&path) {
            Err(e) => e.to_string(),
            Ok(source) => match source.batches.collect::<Result<Vec<_>>>() {
                Err(e) => e.to_string(),
                Ok(_) => panic!("a JSON array was read as JSON lines"),
            },
        };
        assert!(message.contains("array.json"), "{message}");
    }

    #[test]
    fn csv_still_reads_and_counts_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.csv");
        let text = "id,name\n1,a\n2,b\n";
        std::fs::write(&path, text).unwrap();
        let source = open(&path).unwrap();
        let counter = source.bytes_read.clone().unwrap();
        let rows: usize = source.batches.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
        assert_eq!(counter.load(Ordering::Relaxed), text.len() as u64);
    }
}
