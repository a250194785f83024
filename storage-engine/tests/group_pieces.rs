//! GROUP BY on a dictionary string column when one core first scans a piece the statistics prove
//! all-matching (no selection mask) and then a boundary piece that needs filtering: a category
//! present only in the boundary page's selected rows must still form its group. It used to be
//! dropped: the first piece interned the whole dictionary without rows for that category, and the
//! filtered piece created no new group, so nothing counted its rows.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_storage_engine::table::manifest::WriterSettings;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, EngineConfig};

const DAY: i64 = 1_704_067_200_000_000; // 2024-01-01

/// 300 rows one second apart, pages of 100 rows: page 0 holds only `a` and `b`; page 1 starts
/// with 50 rows of `c` (the only `c` rows), then `a`; page 2 is `b`.
fn rows() -> Vec<(i64, &'static str)> {
    (0..300i64)
        .map(|i| {
            let category = match i {
                0..=99 => ["a", "b"][(i % 2) as usize],
                100..=149 => "c",
                150..=199 => "a",
                _ => "b",
            };
            (DAY + i * 1_000_000, category)
        })
        .collect()
}

fn engine(cores: usize) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("category", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let options = ImportOptions {
        writer: Some(WriterSettings {
            page_rows_max: 100,
            ..WriterSettings::default()
        }),
        ..ImportOptions::default()
    };
    let mut writer = TableWriter::open(dir.path(), "acme", "t", &schema, &options).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.cores = cores;
    config.pin_cores = false;
    config.buffer_pool_bytes = 16 << 20;
    (dir, Engine::open(config).unwrap())
}

#[test]
fn category_only_in_the_filtered_boundary_page_keeps_its_group() {
    for cores in [1, 2] {
        let (_dir, engine) = engine(cores);
        // Cut inside page 1, after the `c` rows: page 0 all-matching, page 1 filtered.
        for cut in [120, 150, 170] {
            let bound = tessera_storage_engine::value::format_timestamp(DAY + cut * 1_000_000);
            let sql = format!(
                "SELECT category, COUNT(*) FROM t WHERE ts < '{bound}' GROUP BY category ORDER BY category"
            );
            for _ in 0..2 {
                let result = engine.sql("acme", &sql).unwrap();
                let mut got = BTreeMap::new();
                for batch in &result.batches {
                    let names = batch.column(0).as_string::<i32>();
                    let counts = batch.column(1).as_primitive::<Int64Type>();
                    for i in 0..batch.num_rows() {
                        got.insert(names.value(i).to_owned(), counts.value(i));
                    }
                }
                let mut expected = BTreeMap::new();
                for (ts, category) in rows() {
                    if ts < DAY + cut * 1_000_000 {
                        *expected.entry(category.to_owned()).or_insert(0i64) += 1;
                    }
                }
                assert_eq!(got, expected, "{cores} cores: {sql}");
            }
        }
    }
}
