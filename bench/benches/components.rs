//! Component benchmarks: the buffer pool's hit path, and decoding plus aggregating one row group
//! (`SUM(amount) GROUP BY category` over 1 M generated rows) from in-memory Parquet bytes.

use arrow_array::Array;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;
use std::sync::Arc;
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::io::buffer_pool::{BufferPool, Frame, PageKey};
use tessera_storage_engine::query::aggregate::{AccState, GroupState};
use tessera_storage_engine::query::kernels::Kernels;
use tessera_storage_engine::query::plan::{Aggregate, ValueExpr};
use tessera_storage_engine::query::sql::AggregateFunction;
use tessera_storage_engine::table::manifest::ColumnDef;
use tessera_storage_engine::table::reader;
use tessera_storage_engine::value::ColumnType;

fn buffer_pool(c: &mut Criterion) {
    let pool = BufferPool::new(1 << 30);
    let pages = 4096u32;
    for page in 0..pages {
        let array = Arc::new(arrow_array::Int64Array::from(vec![page as i64; 128]));
        pool.insert(
            PageKey {
                file_id: 1,
                row_group: 0,
                column: 0,
                page,
            },
            Frame::new(0, array),
        );
    }
    let mut group = c.benchmark_group("buffer_pool");
    group.throughput(Throughput::Elements(1));
    let mut page = 0u32;
    group.bench_function("hit", |b| {
        b.iter(|| {
            page = (page + 1) % pages;
            pool.get(&PageKey {
                file_id: 1,
                row_group: 0,
                column: 0,
                page,
            })
        })
    });
    group.finish();
}

fn decode_and_aggregate(c: &mut Criterion) {
    const ROWS: u64 = 1 << 20;
    let batch = events_chunk(0, ROWS, ROWS, 3);
    let mut bytes = Vec::new();
    let properties =
        tessera_storage_engine::table::writer::writer_properties(&Default::default(), Some(1));
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let bytes = bytes::Bytes::from(bytes);
    let columns: Vec<ColumnDef> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| ColumnDef {
            name: f.name().clone(),
            column_type: ColumnType::from_arrow(f.data_type()).unwrap(),
            nullable: true,
        })
        .collect();
    let path = Path::new("bench.parquet");
    let meta = futures::executor::block_on(reader::load_file_meta(&bytes, path, &columns, &mut 0))
        .unwrap();
    let kernels = Kernels::detect();
    let aggregates = vec![Aggregate {
        function: AggregateFunction::Sum,
        argument: Some(ValueExpr::Column(4)),
        input_type: Some(ColumnType::Float64),
    }];
    let mut group = c.benchmark_group("row_group");
    group.throughput(Throughput::Elements(ROWS));
    group.sample_size(10);
    // Decode the two columns' pages, then aggregate: the cold path minus I/O.
    group.bench_function("decode_and_sum_by_category", |b| {
        b.iter(|| {
            let mut state = GroupState::new(&[ValueExpr::Column(3)], &aggregates);
            for row_group in 0..meta.row_groups() {
                let decode = |column: usize| -> Vec<arrow_array::ArrayRef> {
                    let pages: Vec<usize> =
                        (0..meta.page_bounds[row_group][column].len() - 1).collect();
                    futures::executor::block_on(reader::decode_pages(
                        &bytes, &meta, row_group, column, &pages, &mut 0,
                    ))
                    .unwrap()
                };
                let categories = arrow_select::concat::concat(
                    &decode(3).iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
                )
                .unwrap();
                let amounts = arrow_select::concat::concat(
                    &decode(4).iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
                )
                .unwrap();
                let len = amounts.len();
                state
                    .update(
                        &kernels,
                        &|c| {
                            if c == 3 {
                                categories.clone()
                            } else {
                                amounts.clone()
                            }
                        },
                        None,
                        len,
                    )
                    .unwrap();
            }
            let groups = state.finish();
            assert!(
                (0..groups.len()).all(|g| matches!(groups.state(0, g), AccState::SumFloat { .. }))
            );
            groups.len()
        })
    });
    // Aggregate already-decoded columns: the warm path.
    let categories = batch.column(3).clone();
    let categories = arrow_cast::cast(
        &categories,
        &arrow_schema::DataType::Dictionary(
            Box::new(arrow_schema::DataType::Int32),
            Box::new(arrow_schema::DataType::Utf8),
        ),
    )
    .unwrap();
    let amounts = batch.column(4).clone();
    group.bench_function("sum_by_category_decoded", |b| {
        b.iter(|| {
            let mut state = GroupState::new(&[ValueExpr::Column(3)], &aggregates);
            state
                .update(
                    &kernels,
                    &|c| {
                        if c == 3 {
                            categories.clone()
                        } else {
                            amounts.clone()
                        }
                    },
                    None,
                    amounts.len(),
                )
                .unwrap();
            state.finish().len()
        })
    });
    group.finish();
}

criterion_group!(benches, buffer_pool, decode_and_aggregate);
criterion_main!(benches);
