//! Pruning by statistics: classifies a filter against min/max/null-count statistics of a file,
//! a row group or a page as `Never` (no row can match: skip it), `Always` (every row matches:
//! count it without decoding) or `Maybe`. Row ranges of a row group get a truth each from the
//! page index (`Segments`), combined across columns by AND/OR on their boundaries.

use crate::query::kernels::CmpOp;
use crate::query::plan::{Filter, Test};
use crate::table::stats::ColumnStats;
use crate::value::Scalar;
use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    Never,
    Maybe,
    Always,
}

impl Truth {
    fn and(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::Never, _) | (_, Truth::Never) => Truth::Never,
            (Truth::Always, Truth::Always) => Truth::Always,
            _ => Truth::Maybe,
        }
    }

    fn or(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::Always, _) | (_, Truth::Always) => Truth::Always,
            (Truth::Never, Truth::Never) => Truth::Never,
            _ => Truth::Maybe,
        }
    }
}

/// The truth of `filter` over rows described by `stats(column)`.
pub fn classify(filter: &Filter, stats: &dyn Fn(usize) -> Option<ColumnStats>) -> Truth {
    match filter {
        Filter::And(parts) => parts
            .iter()
            .fold(Truth::Always, |t, p| t.and(classify(p, stats))),
        Filter::Or(parts) => parts
            .iter()
            .fold(Truth::Never, |t, p| t.or(classify(p, stats))),
        Filter::Unknown => Truth::Never,
        Filter::Leaf { column, test } => match stats(*column) {
            Some(s) => classify_test(test, &s),
            None => Truth::Maybe,
        },
    }
}

fn cmp(a: &Scalar, b: &Scalar) -> Ordering {
    a.total_cmp(b)
}

fn classify_test(test: &Test, stats: &ColumnStats) -> Truth {
    let no_nulls = stats.null_count == Some(0);
    if let Test::IsNull { negated } = test {
        return match (stats.null_count, negated) {
            (Some(0), false) => Truth::Never,
            (Some(0), true) => Truth::Always,
            (Some(n), false) if n == stats.rows => Truth::Always,
            (Some(n), true) if n == stats.rows => Truth::Never,
            _ => Truth::Maybe,
        };
    }
    if stats.rows == 0 || stats.all_null() {
        return Truth::Never;
    }
    let (min, max) = (&stats.min, &stats.max);
    if matches!(min, Scalar::Null) || matches!(max, Scalar::Null) {
        return Truth::Maybe;
    }
    // NaN is above every number (PostgreSQL's order) and statistics leave it out of min/max: when
    // one may be there, `upper`, the true upper bound, is NaN. `max` still bounds the rows a
    // number can be equal to or between (NaN equals only NaN).
    let nan = Scalar::Float(f64::NAN);
    let upper = if stats.nan_possible && matches!(min, Scalar::Float(_)) {
        &nan
    } else {
        max
    };
    let is_nan = |v: &Scalar| matches!(v, Scalar::Float(f) if f.is_nan());
    let top_for = |v: &Scalar| if is_nan(v) { upper } else { max };
    let all = |holds: bool| {
        if holds && no_nulls {
            Truth::Always
        } else {
            Truth::Maybe
        }
    };
    match test {
        Test::Compare { op, value } => {
            let below = cmp(value, min) == Ordering::Less; // value < min
            let above = cmp(value, top_for(value)) == Ordering::Greater; // no row equals value
            let single = cmp(min, upper) == Ordering::Equal && cmp(min, value) == Ordering::Equal;
            match op {
                CmpOp::Eq if below || above => Truth::Never,
                CmpOp::Eq => all(single),
                CmpOp::Ne if single => Truth::Never,
                CmpOp::Ne => all(below || above),
                CmpOp::Lt if cmp(min, value) != Ordering::Less => Truth::Never,
                CmpOp::Lt => all(cmp(upper, value) == Ordering::Less),
                CmpOp::Le if cmp(min, value) == Ordering::Greater => Truth::Never,
                CmpOp::Le => all(cmp(upper, value) != Ordering::Greater),
                CmpOp::Gt if cmp(upper, value) != Ordering::Greater => Truth::Never,
                CmpOp::Gt => all(cmp(min, value) == Ordering::Greater),
                CmpOp::Ge if cmp(upper, value) == Ordering::Less => Truth::Never,
                CmpOp::Ge => all(cmp(min, value) != Ordering::Less),
            }
        }
        Test::Between { low, high } => {
            // With a number as `high`, no NaN is inside; a NaN `high` admits NaN rows.
            if cmp(high, min) == Ordering::Less
                || cmp(low, top_for(high)) == Ordering::Greater
                || cmp(low, high) == Ordering::Greater
            {
                Truth::Never
            } else {
                all(cmp(low, min) != Ordering::Greater && cmp(upper, high) != Ordering::Greater)
            }
        }
        Test::In {
            values,
            negated: false,
            ..
        } => {
            let any_inside = values
                .iter()
                .any(|v| cmp(v, min) != Ordering::Less && cmp(v, top_for(v)) != Ordering::Greater);
            if any_inside {
                Truth::Maybe
            } else {
                Truth::Never
            }
        }
        Test::In {
            negated: true,
            list_has_null: true,
            ..
        } => Truth::Never,
        Test::In { negated: true, .. } => Truth::Maybe,
        Test::Like {
            pattern,
            is_prefix: true,
            negated: false,
        } => match max {
            Scalar::Str(max)
                if max.as_bytes() < pattern.as_bytes() && !max.starts_with(pattern.as_str()) =>
            {
                Truth::Never
            }
            _ => Truth::Maybe,
        },
        Test::Like {
            pattern,
            is_prefix: false,
            negated: false,
        } => classify_test(
            &Test::Compare {
                op: CmpOp::Eq,
                value: Scalar::Str(pattern.clone()),
            },
            stats,
        ),
        Test::Like { .. } => Truth::Maybe,
        Test::IsNull { .. } => Truth::Maybe,
    }
}

/// Truths over consecutive row ranges of a row group: `(end, truth)` pairs covering `0..rows`.
#[derive(Clone, Debug, PartialEq)]
pub struct Segments(pub Vec<(u32, Truth)>);

impl Segments {
    pub fn uniform(rows: u32, truth: Truth) -> Segments {
        Segments(vec![(rows, truth)])
    }

    /// Iterates `(start..end, truth)`.
    pub fn ranges(&self) -> impl Iterator<Item = (std::ops::Range<u32>, Truth)> + '_ {
        let mut start = 0;
        self.0.iter().map(move |&(end, truth)| {
            let range = start..end;
            start = end;
            (range, truth)
        })
    }

    /// These segments with every row outside `rows` made `Never` (a share of a row group).
    pub fn within(&self, rows: std::ops::Range<u32>) -> Segments {
        let mut out = Vec::with_capacity(self.0.len() + 2);
        let mut start = 0;
        for &(end, truth) in &self.0 {
            for (cut, inside) in [(rows.start, false), (rows.end, true)] {
                if cut > start && cut < end {
                    push(&mut out, cut, if inside { truth } else { Truth::Never });
                    start = cut;
                }
            }
            let inside = start >= rows.start && end <= rows.end;
            push(&mut out, end, if inside { truth } else { Truth::Never });
            start = end;
        }
        Segments(out)
    }

    fn combine(&self, other: &Segments, f: impl Fn(Truth, Truth) -> Truth) -> Segments {
        let mut out: Vec<(u32, Truth)> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (end_a, truth_a) = self.0[i];
            let (end_b, truth_b) = other.0[j];
            let end = end_a.min(end_b);
            push(&mut out, end, f(truth_a, truth_b));
            if end_a == end {
                i += 1;
            }
            if end_b == end {
                j += 1;
            }
        }
        Segments(out)
    }
}

fn push(out: &mut Vec<(u32, Truth)>, end: u32, truth: Truth) {
    match out.last_mut() {
        Some(last) if last.1 == truth => last.0 = end,
        _ => out.push((end, truth)),
    }
}

/// Page-level truths of `filter` in a row group: `page_stats(column)` gives each page's
/// `(end_row, stats)` for a column with a page index, or `None`.
pub fn segments(
    filter: &Filter,
    rows: u32,
    page_stats: &dyn Fn(usize) -> Option<Vec<(u32, ColumnStats)>>,
) -> Segments {
    match filter {
        Filter::And(parts) | Filter::Or(parts) => {
            let is_and = matches!(filter, Filter::And(_));
            let start = Segments::uniform(rows, if is_and { Truth::Always } else { Truth::Never });
            parts.iter().fold(start, |acc, part| {
                let part = segments(part, rows, page_stats);
                if is_and {
                    acc.combine(&part, Truth::and)
                } else {
                    acc.combine(&part, Truth::or)
                }
            })
        }
        Filter::Unknown => Segments::uniform(rows, Truth::Never),
        Filter::Leaf { column, test } => match page_stats(*column) {
            Some(pages) => {
                let mut out = Vec::with_capacity(pages.len());
                for (end, stats) in pages {
                    push(&mut out, end, classify_test(test, &stats));
                }
                if out.last().map(|l| l.0) != Some(rows) {
                    return Segments::uniform(rows, Truth::Maybe);
                }
                Segments(out)
            }
            None => Segments::uniform(rows, Truth::Maybe),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(min: i64, max: i64, nulls: u64) -> ColumnStats {
        ColumnStats {
            min: Scalar::Int(min),
            max: Scalar::Int(max),
            null_count: Some(nulls),
            rows: 100,
            nan_possible: false,
            zero_exact: false,
        }
    }

    fn leaf(op: CmpOp, v: i64) -> Filter {
        Filter::Leaf {
            column: 0,
            test: Test::Compare {
                op,
                value: Scalar::Int(v),
            },
        }
    }

    #[test]
    fn within_keeps_only_the_share_and_every_row_once() {
        use Truth::*;
        let segments = Segments(vec![(10, Always), (30, Maybe), (40, Never), (50, Maybe)]);
        let shares = [0..15, 15..45, 45..50];
        let mut seen = [0u8; 50];
        for share in shares.clone() {
            let part = segments.within(share.clone());
            assert_eq!(part.0.last().map(|l| l.0), Some(50));
            for (range, truth) in part.ranges() {
                for row in range {
                    let whole = segments.ranges().find(|(r, _)| r.contains(&row)).unwrap().1;
                    if share.contains(&row) {
                        assert_eq!(truth, whole, "row {row}");
                        seen[row as usize] += 1;
                    } else {
                        assert_eq!(truth, Never, "row {row}");
                    }
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        assert_eq!(segments.within(0..50).0, segments.0);
    }

    #[test]
    fn comparisons_prune_and_cover() {
        let s = stats(10, 20, 0);
        let c = |f: &Filter| classify(f, &|_| Some(s.clone()));
        assert_eq!(c(&leaf(CmpOp::Eq, 5)), Truth::Never);
        assert_eq!(c(&leaf(CmpOp::Eq, 15)), Truth::Maybe);
        assert_eq!(c(&leaf(CmpOp::Lt, 10)), Truth::Never);
        assert_eq!(c(&leaf(CmpOp::Lt, 21)), Truth::Always);
        assert_eq!(c(&leaf(CmpOp::Ge, 10)), Truth::Always);
        assert_eq!(c(&leaf(CmpOp::Gt, 20)), Truth::Never);
        assert_eq!(c(&leaf(CmpOp::Ne, 25)), Truth::Always);
        let with_nulls = stats(10, 20, 3);
        assert_eq!(
            classify(&leaf(CmpOp::Ge, 10), &|_| Some(with_nulls.clone())),
            Truth::Maybe
        );
    }

    #[test]
    fn float_bounds_without_nan_proof_never_claim_all_or_none_for_nan() {
        let float_stats = |nan_possible: bool| ColumnStats {
            min: Scalar::Float(1.0),
            max: Scalar::Float(10.0),
            null_count: Some(0),
            rows: 100,
            nan_possible,
            zero_exact: false,
        };
        let test = |op: CmpOp, value: f64, nan_possible: bool| {
            let filter = Filter::Leaf {
                column: 0,
                test: Test::Compare {
                    op,
                    value: Scalar::Float(value),
                },
            };
            classify(&filter, &|_| Some(float_stats(nan_possible)))
        };
        // A NaN may be there: it is above 10, unequal to everything, and not <= 10.
        assert_eq!(test(CmpOp::Le, 10.0, true), Truth::Maybe);
        assert_eq!(test(CmpOp::Lt, 11.0, true), Truth::Maybe);
        assert_eq!(test(CmpOp::Gt, 10.0, true), Truth::Maybe);
        assert_eq!(test(CmpOp::Ge, 11.0, true), Truth::Maybe);
        assert_eq!(test(CmpOp::Ne, 20.0, true), Truth::Always);
        assert_eq!(test(CmpOp::Lt, 1.0, true), Truth::Never);
        assert_eq!(test(CmpOp::Eq, 20.0, true), Truth::Never);
        let single = ColumnStats {
            min: Scalar::Float(3.0),
            max: Scalar::Float(3.0),
            ..float_stats(true)
        };
        assert_eq!(
            classify(
                &Filter::Leaf {
                    column: 0,
                    test: Test::Compare {
                        op: CmpOp::Ne,
                        value: Scalar::Float(3.0)
                    }
                },
                &|_| Some(single.clone())
            ),
            Truth::Maybe
        );
        let between = Filter::Leaf {
            column: 0,
            test: Test::Between {
                low: Scalar::Float(0.0),
                high: Scalar::Float(20.0),
            },
        };
        assert_eq!(
            classify(&between, &|_| Some(float_stats(true))),
            Truth::Maybe
        );
        // The writer proved there is none: the bounds decide alone.
        assert_eq!(test(CmpOp::Le, 10.0, false), Truth::Always);
        assert_eq!(test(CmpOp::Gt, 10.0, false), Truth::Never);
        assert_eq!(
            classify(&between, &|_| Some(float_stats(false))),
            Truth::Always
        );
        // NaN as a constant is the top value.
        assert_eq!(test(CmpOp::Eq, f64::NAN, false), Truth::Never);
        assert_eq!(test(CmpOp::Lt, f64::NAN, false), Truth::Always);
        assert_eq!(test(CmpOp::Eq, f64::NAN, true), Truth::Maybe);
    }

    #[test]
    fn segments_combine_on_boundaries() {
        let pages = vec![
            (10, stats(0, 9, 0)),
            (20, stats(10, 19, 0)),
            (30, stats(20, 29, 0)),
        ];
        let filter = Filter::And(vec![leaf(CmpOp::Ge, 10), leaf(CmpOp::Lt, 25)]);
        let s = segments(&filter, 30, &|_| Some(pages.clone()));
        assert_eq!(
            s.0,
            vec![(10, Truth::Never), (20, Truth::Always), (30, Truth::Maybe)]
        );
    }
}
