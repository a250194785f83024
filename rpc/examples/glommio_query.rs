//! The same client under glommio (a thread-per-core runtime): the client's futures are plain
//! channel futures, so any executor can drive them.
//! `cargo run -p tessera-rpc --example glommio_query -- ADDR TOKEN "SQL"`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: glommio_query ADDR TOKEN SQL";
    let addr = args.next().ok_or(usage)?;
    let token = args.next().ok_or(usage)?;
    let sql = args.next().ok_or(usage)?;
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make()?;
    executor.run(async move {
        let client = tessera_rpc::Client::connect(&addr).await?;
        let session = client.login(&token).await?;
        let output = session.query_collect(&sql).await?;
        println!(
            "{} rows in {} batches; schema {:?}; server time {} µs",
            output.num_rows(),
            output.batches.len(),
            output
                .schema
                .fields()
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>(),
            output.stats.elapsed_micros
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
