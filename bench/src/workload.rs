//! The spec's query mix over the generated `events` table (10% point lookups, 30% one-month
//! COUNTs, 40% SUM GROUP BY category, 20% per-day per-category AVG), with parameters drawn from
//! a seeded generator so a run can be repeated exactly.

/// xorshift64*: small, deterministic, good enough to spread parameters.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The query classes of the mix.
pub const CLASSES: [&str; 4] = ["point", "range_count", "group_by", "daily_avg"];

/// The spec's weights.
pub const SPEC_MIX: &str = "point:10,range_count:30,group_by:40,daily_avg:20";

/// A weighted choice of query classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    entries: Vec<(&'static str, u64)>,
    total: u64,
}

impl Mix {
    /// `class:weight,...` with classes from [`CLASSES`].
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut entries = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (class, weight) = part
                .split_once(':')
                .ok_or_else(|| format!("mix entry '{part}' is not class:weight"))?;
            let class = CLASSES
                .iter()
                .find(|c| **c == class.trim())
                .ok_or_else(|| {
                    format!("mix class '{class}' is not one of {}", CLASSES.join(", "))
                })?;
            let weight: u64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("mix weight '{weight}' is not a whole number"))?;
            if entries.iter().any(|(c, _)| c == class) {
                return Err(format!("mix class '{class}' appears twice"));
            }
            entries.push((*class, weight));
        }
        let total = entries.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err("the mix has no class with a weight above zero".into());
        }
        Ok(Mix { entries, total })
    }

    pub fn pick(&self, rng: &mut Rng) -> &'static str {
        let mut draw = rng.below(self.total);
        for (class, weight) in &self.entries {
            if draw < *weight {
                return class;
            }
            draw -= weight;
        }
        self.entries[self.entries.len() - 1].0
    }
}

/// The calendar date `day` days after 2023-07-01 (the generator's first day; it spans 366 days).
pub fn date(day: u64) -> String {
    let month_lengths = [31u64, 31, 30, 31, 30, 31, 31, 29, 31, 30, 31, 30];
    let (mut year, mut month, mut day) = (2023, 7, day.min(365));
    for length in month_lengths {
        if day < length {
            break;
        }
        day -= length;
        month += 1;
        if month == 13 {
            month = 1;
            year += 1;
        }
    }
    format!("{year}-{month:02}-{:02}", day + 1)
}

/// A query of `class` on `table` holding `rows` generated rows, parameters from `rng`.
pub fn query(class: &str, table: &str, rows: u64, rng: &mut Rng) -> String {
    match class {
        "point" => format!("SELECT * FROM {table} WHERE id = {}", rng.below(rows) + 1),
        "range_count" => {
            let start = rng.below(330);
            format!(
                "SELECT COUNT(*) FROM {table} WHERE timestamp BETWEEN '{}' AND '{} 23:59:59'",
                date(start),
                date(start + 30)
            )
        }
        "group_by" => format!("SELECT category, SUM(amount) FROM {table} GROUP BY category"),
        _ => format!(
            "SELECT DATE(timestamp), category, AVG(amount) FROM {table} WHERE timestamp >= '{}' GROUP BY DATE(timestamp), category",
            date(rng.below(300))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_mix_is_drawn_in_its_proportions() {
        let mix = Mix::parse(SPEC_MIX).unwrap();
        let mut rng = Rng::new(7);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..100_000 {
            *counts.entry(mix.pick(&mut rng)).or_insert(0u64) += 1;
        }
        for (class, share) in [
            ("point", 0.1),
            ("range_count", 0.3),
            ("group_by", 0.4),
            ("daily_avg", 0.2),
        ] {
            let got = counts[class] as f64 / 100_000.0;
            assert!((got - share).abs() < 0.01, "{class}: {got}");
        }
    }

    #[test]
    fn bad_mixes_are_refused() {
        assert!(Mix::parse("point").unwrap_err().contains("class:weight"));
        assert!(Mix::parse("join:3").unwrap_err().contains("not one of"));
        assert!(Mix::parse("point:x").unwrap_err().contains("whole number"));
        assert!(Mix::parse("point:0").unwrap_err().contains("above zero"));
        assert!(Mix::parse("point:1,point:2").unwrap_err().contains("twice"));
    }

    #[test]
    fn dates_cover_the_generated_year() {
        assert_eq!(date(0), "2023-07-01");
        assert_eq!(date(31), "2023-08-01");
        assert_eq!(date(184), "2024-01-01");
        assert_eq!(date(243), "2024-02-29");
        assert_eq!(date(365), "2024-06-30");
    }

    #[test]
    fn the_same_seed_gives_the_same_queries() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        for class in CLASSES {
            assert_eq!(
                query(class, "events", 1000, &mut a),
                query(class, "events", 1000, &mut b)
            );
        }
    }
}
