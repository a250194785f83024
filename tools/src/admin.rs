//! `tessera admin`: a tenant's table maintenance on a server (role admin): `drop-partitions`
//! (retention: whole date partitions older than a cutoff, at once) and `compact` (merge a
//! table's small files now).

use crate::RemoteArgs;

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Drop every date partition of a table older than --before, atomically (rows still
    /// buffered by ingestion are flushed first and go with their partitions).
    DropPartitions {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        table: String,
        /// First date kept, YYYY-MM-DD.
        #[arg(long)]
        before: String,
    },
    /// Merge a table's small files now (as background compaction does).
    Compact {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        table: String,
    },
}

fn session(remote: &RemoteArgs) -> Result<tessera_rpc::Session, String> {
    remote
        .session()?
        .ok_or_else(|| "tessera admin needs --addr and --token".to_owned())
}

pub fn run(command: &AdminCommand) -> Result<(), String> {
    match command {
        AdminCommand::DropPartitions {
            remote,
            table,
            before,
        } => {
            let session = session(remote)?;
            let dropped =
                futures::executor::block_on(session.drop_partitions_before(table, before))
                    .map_err(|e| e.to_string())?;
            match (dropped.dates.first(), dropped.dates.last()) {
                (Some(first), Some(last)) => println!(
                    "dropped {} partitions ({first} .. {last}): {} files, {} rows",
                    dropped.dates.len(),
                    dropped.files,
                    dropped.rows
                ),
                _ => println!("nothing before {before} in {table}"),
            }
            Ok(())
        }
        AdminCommand::Compact { remote, table } => {
            let session = session(remote)?;
            let (removed, written) =
                futures::executor::block_on(session.compact(table)).map_err(|e| e.to_string())?;
            println!("compacted {table}: {removed} files merged into {written}");
            Ok(())
        }
    }
}
