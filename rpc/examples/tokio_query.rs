//! The client under tokio: `cargo run -p tessera-rpc --example tokio_query -- ADDR TOKEN "SQL"`
//! (or TESSERA_TOKEN in the environment). Streams the result and prints each batch's size.

use futures::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: tokio_query ADDR TOKEN SQL";
    let addr = args.next().ok_or(usage)?;
    let token = args.next().ok_or(usage)?;
    let sql = args.next().ok_or(usage)?;
    let client = tessera_rpc::Client::connect(&addr).await?;
    let session = client.login(&token).await?;
    let mut stream = session.query(&sql).await?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        println!(
            "batch: {} rows x {} columns",
            batch.num_rows(),
            batch.num_columns()
        );
    }
    println!("{rows} rows; server stats: {:?}", stream.stats());
    Ok(())
}
