//! Loading the pages a row group's scan needs: from the core's buffer pool, else read with direct
//! I/O (every missing page of every column of the row group in one batch of large reads, adjacent
//! column chunks merged, all in flight together), decoded one column at a time, then pooled.

use crate::error::{Error, Result};
use crate::io::buffer_pool::{Frame, PageKey};
use crate::io::runtime::{self, DirectFile};
use crate::query::prune::{Segments, Truth};
use crate::table::reader::{self, FileMeta};
use arrow_array::{Array, ArrayRef};
use hashbrown::HashMap;
use std::ops::Range;
use std::rc::Rc;

use super::{CoreState, FileTask, ScanStats};

/// Page index of the page containing `row`.
pub(super) fn page_of(bounds: &[u32], row: u32) -> usize {
    bounds.partition_point(|&b| b <= row).saturating_sub(1)
}

pub(super) type Pages = HashMap<(usize, usize), Rc<Frame>>;

/// Loads the `(column, page)` pages, from the pool or by decoding (all misses in flight together).
#[allow(clippy::too_many_arguments)]
pub(super) async fn load_pages(
    state: &CoreState,
    task: &FileTask,
    meta: &FileMeta,
    file: &DirectFile,
    row_group: usize,
    wanted: Vec<(usize, usize)>,
    pages: &mut Pages,
    stats: &mut ScanStats,
) -> Result<()> {
    let mut misses = Vec::new();
    for (column, page) in wanted {
        if pages.contains_key(&(column, page)) {
            continue;
        }
        let key = PageKey {
            file_id: task.cache_id,
            row_group: row_group as u32,
            column: column as u32,
            page: page as u32,
        };
        match state.pool.get(&key) {
            Some(frame) => {
                stats.bytes_scanned += frame.bytes as u64;
                pages.insert((column, page), frame);
            }
            None => misses.push((column, page)),
        }
    }
    if misses.is_empty() {
        return Ok(());
    }
    // One decoder per column for all its missing pages; all columns' reads in flight together.
    let mut by_column: Vec<(usize, Vec<usize>)> = Vec::new();
    for &(column, page) in &misses {
        match by_column.iter_mut().find(|(c, _)| *c == column) {
            Some((_, pages)) => pages.push(page),
            None => by_column.push((column, vec![page])),
        }
    }
    by_column
        .iter_mut()
        .for_each(|(_, pages)| pages.sort_unstable());
    // Read every column's pages first, in few large reads (neighbouring column chunks merge),
    // then decode from memory.
    let ranges: Vec<Range<u64>> = by_column
        .iter()
        .flat_map(|(column, pages)| reader::page_ranges(meta, row_group, *column, pages))
        .collect();
    let prefetched =
        reader::Prefetched::read(file, &meta.path, &ranges, &mut stats.bytes_read).await?;
    let mut decoded = Vec::with_capacity(by_column.len());
    for (column, column_pages) in &by_column {
        crate::io::runtime::yield_if_needed().await;
        // Counted by the read ahead (and `bytes_missed`), not again here.
        let mut served = 0;
        decoded.push(
            reader::decode_pages(
                &prefetched,
                meta,
                row_group,
                *column,
                column_pages,
                &mut served,
            )
            .await?,
        );
    }
    stats.bytes_read += prefetched.bytes_missed.get();
    for ((column, column_pages), arrays) in by_column.into_iter().zip(decoded) {
        for (page, array) in column_pages.into_iter().zip(arrays) {
            let first_row = meta.page_bounds[row_group][column][page];
            let key = PageKey {
                file_id: task.cache_id,
                row_group: row_group as u32,
                column: column as u32,
                page: page as u32,
            };
            let owner = runtime::Group::current();
            let frame = state
                .pool
                .insert_for(owner, key, Frame::new(first_row, array));
            stats.bytes_scanned += frame.bytes as u64;
            pages.insert((column, page), frame);
        }
    }
    Ok(())
}

/// The slice of `column` for rows `range` of the row group.
pub(super) fn column_slice(
    meta: &FileMeta,
    pages: &Pages,
    row_group: usize,
    column: usize,
    range: &Range<u32>,
) -> Result<ArrayRef> {
    if meta.lacks(column) {
        return Ok(meta.nulls(column, (range.end - range.start) as usize));
    }
    let bounds = &meta.page_bounds[row_group][column];
    let page = page_of(bounds, range.start);
    let frame = pages
        .get(&(column, page))
        .ok_or_else(|| Error::Internal(format!("page {page} of column {column} not loaded")))?;
    let offset = (range.start - frame.first_row) as usize;
    let length = (range.end - range.start) as usize;
    if offset + length > frame.array.len() {
        return Err(Error::corrupt(
            &meta.path,
            format!("column {column} page {page} is shorter than its index says"),
        ));
    }
    Ok(frame.array.slice(offset, length))
}

/// Splits the non-Never segments at every page boundary of `columns`.
pub(super) fn pieces(
    meta: &FileMeta,
    row_group: usize,
    segments: &Segments,
    columns: &[usize],
) -> Vec<(Range<u32>, Truth)> {
    let mut cuts: Vec<u32> = columns
        .iter()
        .flat_map(|&c| meta.page_bounds[row_group][c].iter().copied())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    for (range, truth) in segments.ranges() {
        if truth == Truth::Never || range.is_empty() {
            continue;
        }
        let mut start = range.start;
        for &cut in cuts.iter().filter(|&&c| c > range.start && c < range.end) {
            out.push((start..cut, truth));
            start = cut;
        }
        out.push((start..range.end, truth));
    }
    out
}

pub(super) fn pages_for(
    meta: &FileMeta,
    row_group: usize,
    columns: &[usize],
    ranges: &[Range<u32>],
) -> Vec<(usize, usize)> {
    let mut wanted = Vec::new();
    for &column in columns.iter().filter(|&&c| !meta.lacks(c)) {
        let bounds = &meta.page_bounds[row_group][column];
        for range in ranges {
            let first = page_of(bounds, range.start);
            let last = page_of(bounds, range.end - 1);
            for page in first..=last {
                if !wanted.contains(&(column, page)) {
                    wanted.push((column, page));
                }
            }
        }
    }
    wanted
}
