use tessera_storage_engine::sql::*;
use tessera_storage_engine::{Engine, EngineConfig};
fn col(n: &str) -> ScalarExpr {
    ScalarExpr::Column(n.into())
}
fn item(e: OutputExpr) -> SelectItem {
    SelectItem::Expr {
        expr: e,
        alias: None,
    }
}
#[test]
fn scratch() {
    let Ok(dir) = std::env::var("SCRATCH_DATA") else {
        return;
    };
    let config = EngineConfig::new(dir);
    let engine = Engine::open(config).unwrap();
    let count = Query {
        table: "events".into(),
        projection: vec![item(OutputExpr::Aggregate {
            function: AggregateFunction::CountStar,
            argument: None,
        })],
        filter: Some(Predicate::Between {
            column: "timestamp".into(),
            low: Literal::String("2024-01-01".into()),
            high: Literal::String("2024-01-31 23:59:59".into()),
            negated: false,
        }),
        group_by: vec![],
        order_by: vec![],
        limit: None,
    };
    let sum = Query {
        table: "events".into(),
        projection: vec![
            item(OutputExpr::Scalar(col("category"))),
            item(OutputExpr::Aggregate {
                function: AggregateFunction::Sum,
                argument: Some(col("amount")),
            }),
        ],
        filter: None,
        group_by: vec![col("category")],
        order_by: vec![],
        limit: None,
    };
    let point = Query {
        table: "events".into(),
        projection: vec![SelectItem::Wildcard],
        filter: Some(Predicate::Compare {
            column: "id".into(),
            op: ComparisonOperator::Eq,
            value: Literal::Integer(10000007),
        }),
        group_by: vec![],
        order_by: vec![],
        limit: None,
    };
    let daily = Query {
        table: "events".into(),
        projection: vec![
            item(OutputExpr::Scalar(ScalarExpr::Date("timestamp".into()))),
            item(OutputExpr::Scalar(col("category"))),
            item(OutputExpr::Aggregate {
                function: AggregateFunction::Avg,
                argument: Some(col("amount")),
            }),
        ],
        filter: Some(Predicate::Compare {
            column: "timestamp".into(),
            op: ComparisonOperator::GtEq,
            value: Literal::String("2024-01-01".into()),
        }),
        group_by: vec![ScalarExpr::Date("timestamp".into()), col("category")],
        order_by: vec![OrderBy {
            key: OrderKey::SelectItem(0),
            descending: false,
        }],
        limit: None,
    };
    for (name, q) in [
        ("point", point),
        ("count", count),
        ("sum", sum),
        ("daily", daily),
    ] {
        let mut times = vec![];
        let mut last = None;
        for _ in 0..8 {
            let r =
                futures::executor::block_on(engine.execute("bench", Statement::Query(q.clone())))
                    .unwrap();
            times.push(r.stats.elapsed.as_secs_f64() * 1e3);
            last = Some(r);
        }
        let r = last.unwrap();
        println!(
            "{name}: first {:.2} ms, then {:?} rows {} {:?}",
            times[0],
            &times[1..]
                .iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>(),
            r.num_rows(),
            r.stats.scan
        );
    }
    let rss = std::fs::read_to_string("/proc/self/status").unwrap();
    println!("{}", rss.lines().find(|l| l.starts_with("VmHWM")).unwrap());
}
