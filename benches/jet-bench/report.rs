//! The report: each figure's values per round and target, printed as a `BENCH {json}` line and, at the end, a table.

use crate::stats::Series;
use crate::targets::{order, Target};
use serde_json::json;
use std::fmt::Write as _;
use std::io;

/// One reported figure: a value per round for one target (or a ratio).
struct Figure {
    id: String,
    what: String,
    target: String,
    unit: &'static str,
    series: Series,
    /// The goal, for the table.
    goal: String,
    failed: Option<String>,
}

#[derive(Default)]
pub struct Report {
    figures: Vec<Figure>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        id: &str,
        what: &str,
        target: &str,
        unit: &'static str,
        series: Series,
        goal: &str,
        failed: Option<String>,
    ) {
        let f = Figure {
            id: id.into(),
            what: what.into(),
            target: target.into(),
            unit,
            series,
            goal: goal.into(),
            failed,
        };
        println!("BENCH {}", f.json());
        self.figures.push(f);
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| figure | target | median | min - max | unit | rounds | goal |\n|---|---|---|---|---|---|---|"
        );
        for f in &self.figures {
            let (median, range) = match &f.failed {
                Some(why) => ("FAILED".to_owned(), why.clone()),
                None => (
                    fmt_num(f.series.median()),
                    format!("{} - {}", fmt_num(f.series.min()), fmt_num(f.series.max())),
                ),
            };
            let _ = writeln!(
                out,
                "| {} {} | {} | {} | {} | {} | {} | {} |",
                f.id,
                f.what,
                f.target,
                median,
                range,
                f.unit,
                f.series.0.len(),
                f.goal
            );
        }
        out
    }
}

impl Figure {
    fn json(&self) -> String {
        let num = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
        json!({
            "figure": self.id,
            "what": self.what,
            "target": self.target,
            "unit": self.unit,
            "median": if self.failed.is_some() { json!(0) } else { num(self.series.median()) },
            "min": num(self.series.min()),
            "max": num(self.series.max()),
            "rounds": self.series.0.len(),
            "values": self.series.0,
            "ok": self.failed.is_none(),
            "error": self.failed,
        })
        .to_string()
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Results of one figure for every target over the rounds; the first
/// error fails the figure for that target.
pub struct Rounds {
    per_target: Vec<(Target, Vec<Series>, Option<String>)>,
}

impl Rounds {
    pub fn new(targets: &[Target], values: usize) -> Rounds {
        Rounds {
            per_target: targets
                .iter()
                .map(|t| (*t, vec![Series::default(); values], None))
                .collect(),
        }
    }

    pub fn record(&mut self, target: Target, result: io::Result<Vec<f64>>) {
        let entry = self
            .per_target
            .iter_mut()
            .find(|(t, _, _)| *t == target)
            .expect("targets are registered up front");
        match result {
            Ok(values) => {
                for (series, v) in entry.1.iter_mut().zip(values) {
                    series.push(v);
                }
            }
            Err(e) => {
                eprintln!("  {}: {e}", target.name());
                entry.2.get_or_insert(e.to_string());
            }
        }
    }

    pub fn series(&self, target: Target, index: usize) -> (Series, Option<String>) {
        let entry = self
            .per_target
            .iter()
            .find(|(t, _, _)| *t == target)
            .expect("targets are registered up front");
        (entry.1[index].clone(), entry.2.clone())
    }

    /// Round-by-round ratio of `target` to `baseline` (same round, so the
    /// same machine conditions); failed when either failed.
    pub fn ratio_to(
        &self,
        target: Target,
        baseline: Target,
        index: usize,
    ) -> (Series, Option<String>) {
        let (t, t_err) = self.series(target, index);
        let (d, d_err) = self.series(baseline, index);
        let series = Series(t.0.iter().zip(&d.0).map(|(a, b)| a / b).collect());
        (series, t_err.or(d_err))
    }
}

/// Runs one round of a figure on every target, in this round's order,
/// with a progress line each; `tag` tells variants of the figure apart.
pub fn one_round(
    rounds: &mut Rounds,
    targets: &[Target],
    round: usize,
    tag: &str,
    mut measure: impl FnMut(Target) -> io::Result<Vec<f64>>,
) {
    for t in order(targets, round) {
        let r = measure(t);
        eprintln!("  round {round} {}{tag}: {}", t.name(), short(&r));
        rounds.record(t, r);
    }
}

/// The values of one measurement, or its error, for a progress line.
pub fn short(r: &io::Result<Vec<f64>>) -> String {
    match r {
        Ok(v) => v.iter().map(|x| fmt_num(*x)).collect::<Vec<_>>().join(" "),
        Err(e) => format!("error: {e}"),
    }
}
