//! `Admin`: table creation (the whole spec validated up front) and removal.

use super::*;
use crate::client::DroppedPartitions;

pub(super) struct AdminServer {
    pub(super) connection: Rc<Connection>,
    pub(super) tenant: String,
    pub(super) identity: Identity,
    /// A client's, or a peer's (`Gateway.peerLogin`: acts on this node only).
    pub(super) origin: Origin,
}

/// A column type by name: `int64`, `decimal(15,2)`, `binary`, ... (`ColumnType::parse`).
fn column_type(name: &str) -> Option<ColumnType> {
    ColumnType::parse(name)
}

/// Most columns a table may have.
const TABLE_COLUMNS_MAX: usize = 1024;
/// Most partition columns besides the day of the time column.
const PARTITION_COLUMNS_MAX: usize = 8;
/// Longest column name, bytes.
const COLUMN_NAME_BYTES_MAX: usize = 128;

/// Whether `name` is a column name a query can write unquoted: `[a-z_][a-z0-9_]*`.
fn valid_column_name(name: &str) -> bool {
    name.len() <= COLUMN_NAME_BYTES_MAX
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a whole `TableSpec` before anything touches the disk: the table name, the columns
/// (names valid and unique after lowercasing, types known, a sane count), the time column (a
/// timestamp column of the table) and the partition columns (columns of the table, distinct,
/// not the time column). Returns the columns, time column and partition columns, lowercased.
type ValidSpec = (Vec<ColumnDef>, Option<String>, Vec<String>);

fn validate_table_spec(
    name: &str,
    columns: Vec<(String, String, bool)>,
    time_column: &str,
    partition_by: Vec<String>,
) -> Result<ValidSpec, Error> {
    if manifest::validate_name("table", name).is_err() {
        return Err(error(
            "invalid",
            format!("table name {name:?}: use 1-128 characters of a-z, 0-9, '_' and '-', not starting with '.', '_' or '-'"),
        ));
    }
    if columns.is_empty() {
        return Err(error("invalid", "a table needs at least one column"));
    }
    if columns.len() > TABLE_COLUMNS_MAX {
        return Err(error(
            "invalid",
            format!(
                "{} columns; a table has at most {TABLE_COLUMNS_MAX}",
                columns.len()
            ),
        ));
    }
    let mut defs: Vec<ColumnDef> = Vec::with_capacity(columns.len());
    for (position, (column_name, type_name, nullable)) in columns.into_iter().enumerate() {
        let column_name = column_name.to_lowercase();
        if column_name.is_empty() {
            return Err(error(
                "invalid",
                format!("column {}: empty name", position + 1),
            ));
        }
        if !valid_column_name(&column_name) {
            return Err(error(
                "invalid",
                format!("column {column_name:?}: use 1-{COLUMN_NAME_BYTES_MAX} characters of a-z, 0-9 and '_', not starting with a digit"),
            ));
        }
        if defs.iter().any(|d| d.name == column_name) {
            return Err(error(
                "invalid",
                format!("column {column_name} appears twice"),
            ));
        }
        let column_type = column_type(&type_name).ok_or_else(|| {
            error(
                "invalid",
                format!("column {column_name}: unknown type {type_name:?} (int32, int64, float64, string, boolean, timestamp, date, decimal(p,s), binary)"),
            )
        })?;
        defs.push(ColumnDef {
            name: column_name,
            column_type,
            nullable,
        });
    }
    let find = |what: &str, column: &str| -> Result<ColumnType, Error> {
        defs.iter()
            .find(|d| d.name == column)
            .map(|d| d.column_type)
            .ok_or_else(|| error("invalid", format!("{what} {column} is not a column")))
    };
    let time_column = time_column.to_lowercase();
    let time_column = if time_column.is_empty() {
        None
    } else {
        let column_type = find("time column", &time_column)?;
        if column_type != ColumnType::Timestamp {
            return Err(error(
                "invalid",
                format!(
                    "time column {time_column} is {}, not timestamp",
                    column_type.name()
                ),
            ));
        }
        Some(time_column)
    };
    if partition_by.len() > PARTITION_COLUMNS_MAX {
        return Err(error(
            "invalid",
            format!(
                "{} partition columns; at most {PARTITION_COLUMNS_MAX}",
                partition_by.len()
            ),
        ));
    }
    let mut partitions: Vec<String> = Vec::with_capacity(partition_by.len());
    for column in partition_by {
        let column = column.to_lowercase();
        find("partition column", &column)?;
        if partitions.contains(&column) || time_column.as_deref() == Some(column.as_str()) {
            return Err(error(
                "invalid",
                format!("partition column {column} is named twice"),
            ));
        }
        partitions.push(column);
    }
    Ok((defs, time_column, partitions))
}

impl admin::Server for AdminServer {
    async fn create_table(
        self: Rc<Self>,
        params: admin::CreateTableParams,
        mut results: admin::CreateTableResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let spec = params.get()?.get_spec()?;
        let name = text(spec.get_name()?)?;
        let mut columns = Vec::new();
        for column in spec.get_columns()? {
            columns.push((
                text(column.get_name()?)?,
                text(column.get_type()?)?,
                column.get_nullable(),
            ));
        }
        let time_column = text(spec.get_time_column()?)?;
        let mut partition_by = Vec::new();
        for column in spec.get_partition_by()? {
            partition_by.push(text(column?)?);
        }
        let (columns, time_column, partition_by) =
            validate_table_spec(&name, columns, &time_column, partition_by)?;
        let replication = (spec.get_replication_factor(), spec.get_write_quorum());
        let partitions = spec.get_cluster_partitions();
        let partition_key = text(spec.get_cluster_partition_key()?)?.to_lowercase();
        if self.origin == Origin::Client && name.contains('.') {
            return Err(error(
                "invalid",
                format!(
                    "table name {name:?}: '.' is kept for the partitions of partitioned tables"
                ),
            ));
        }
        let compression = match spec.get_compression()? {
            WireCompression::Snappy => Compression::Snappy,
            WireCompression::Zstd => Compression::Zstd,
            WireCompression::None => Compression::None,
        };
        let options = ImportOptions {
            partition: Some(PartitionSpec {
                time_column: time_column.clone(),
                columns: partition_by.clone(),
            }),
            writer: Some(WriterSettings {
                compression,
                ..WriterSettings::default()
            }),
            ..ImportOptions::default()
        };
        if let Some(cluster) = self
            .connection
            .shared
            .cluster
            .clone()
            .filter(|_| self.origin == Origin::Client)
        {
            let spec = crate::cluster::spec(
                &name,
                &columns,
                time_column.clone(),
                partition_by.clone(),
                compression,
            );
            if partitions > 1 {
                let key_type = partition_key_type(&columns, &partition_key, partitions)?;
                let mut described = None;
                for index in 0..partitions {
                    let of = crate::cluster::PartitionOf {
                        table: name.clone(),
                        index,
                        count: partitions,
                        key: partition_key.clone(),
                        key_type: key_type.to_owned(),
                    };
                    let part = crate::cluster::partition_name(&name, index);
                    let spec = crate::client::TableSpec {
                        name: part.clone(),
                        ..spec.clone()
                    };
                    let local =
                        create_local(&self.connection, &self.tenant, &part, &columns, &options);
                    let created = create_replicated(
                        &cluster,
                        &self.tenant,
                        spec,
                        replication,
                        Some(of),
                        local,
                    )
                    .await?;
                    described.get_or_insert(created);
                }
                let mut info = match described.expect("two partitions or more") {
                    Created::Here(manifest) => crate::cluster::table_info(&manifest),
                    Created::Elsewhere(info) => info,
                };
                info.name = name;
                write_peer_table_info(results.get().init_table(), &info);
                return Ok(());
            }
            let local = create_local(&self.connection, &self.tenant, &name, &columns, &options);
            let created =
                create_replicated(&cluster, &self.tenant, spec, replication, None, local).await?;
            match created {
                Created::Here(manifest) => write_table_info(results.get().init_table(), &manifest),
                Created::Elsewhere(info) => {
                    write_peer_table_info(results.get().init_table(), &info)
                }
            }
            return Ok(());
        }
        let manifest = create_local(&self.connection, &self.tenant, &name, &columns, &options)
            .await?
            .map_err(engine_error)?;
        write_table_info(results.get().init_table(), &manifest);
        Ok(())
    }

    async fn drop_table(
        self: Rc<Self>,
        params: admin::DropTableParams,
        mut results: admin::DropTableResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let name = text(params.get()?.get_name()?)?;
        manifest::validate_name("table", &name).map_err(engine_error)?;
        let cluster = self
            .connection
            .shared
            .cluster
            .as_ref()
            .filter(|_| self.origin == Origin::Client);
        if let Some(cluster) = cluster {
            let parts = cluster.partition_placements(&self.tenant, &name);
            if !parts.is_empty() {
                // Every partition, each on all its replicas; a drop that fails part way is
                // finished by dropping again.
                for part in parts {
                    self.drop_replicated(cluster, &part).await?;
                }
                results.get().set_existed(true);
                return Ok(());
            }
        }
        let placed = cluster.and_then(|c| Some((c.clone(), c.placement(&self.tenant, &name)?)));
        let existed = match placed {
            Some((cluster, placement)) => self.drop_replicated(&cluster, &placement).await?,
            None => self.drop_here(&name).await?,
        };
        results.get().set_existed(existed);
        Ok(())
    }

    async fn drop_partitions_before(
        self: Rc<Self>,
        params: admin::DropPartitionsBeforeParams,
        mut results: admin::DropPartitionsBeforeResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let params = params.get()?;
        let name = text(params.get_table()?)?;
        let before = text(params.get_before()?)?;
        manifest::validate_name("table", &name).map_err(engine_error)?;
        let cluster = self.connection.shared.cluster.clone();
        let placements = self.placements(&name).await?;
        let dropped = match cluster {
            Some(cluster) if !placements.is_empty() => {
                let mut total = DroppedPartitions::default();
                for placement in &placements {
                    let part = self
                        .drop_partitions_placed(&cluster, placement, &before)
                        .await?;
                    total.files += part.files;
                    total.rows += part.rows;
                    total.dates.extend(part.dates);
                }
                total.dates.sort();
                total.dates.dedup();
                total
            }
            _ => self.drop_partitions_here(&name, &before).await?,
        };
        let mut results = results.get();
        results.set_files(dropped.files);
        results.set_rows(dropped.rows);
        let mut dates = results.init_dates(dropped.dates.len() as u32);
        for (i, date) in dropped.dates.iter().enumerate() {
            dates.set(i as u32, date);
        }
        Ok(())
    }

    async fn compact(
        self: Rc<Self>,
        params: admin::CompactParams,
        mut results: admin::CompactResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let name = text(params.get()?.get_table()?)?;
        manifest::validate_name("table", &name).map_err(engine_error)?;
        // In a cluster: every up replica of the table (of each partition) compacts its copy.
        let cluster = self.connection.shared.cluster.clone();
        let placements = self.placements(&name).await?;
        let (mut removed, mut written) = (0, 0);
        match cluster {
            Some(cluster) if !placements.is_empty() => {
                let mut failures = Vec::new();
                for placement in &placements {
                    for replica in placement.answering() {
                        let table = placement.table.as_str();
                        let compacted = if replica.node_id == cluster.node_id() {
                            self.compact_here(table).await
                        } else {
                            let remote = async {
                                let session = cluster
                                    .session(&replica.address, &self.tenant, false)
                                    .await?;
                                session.compact(table).await
                            };
                            remote.await.map_err(|e| {
                                cluster.forget_peer(&replica.address);
                                error("unavailable", e)
                            })
                        };
                        match compacted {
                            Ok((r, w)) => (removed, written) = (removed + r, written + w),
                            Err(e) => failures.push(format!("{table} on {}: {e}", replica.node_id)),
                        }
                    }
                }
                if !failures.is_empty() {
                    return Err(error(
                        "unavailable",
                        format!(
                            "not every replica compacted ({}); the others removed {removed} \
                             files and wrote {written}",
                            failures.join("; ")
                        ),
                    ));
                }
            }
            _ => (removed, written) = self.compact_here(&name).await?,
        }
        let mut results = results.get();
        results.set_files_removed(removed);
        results.set_files_written(written);
        Ok(())
    }

    async fn list_tables(
        self: Rc<Self>,
        _: admin::ListTablesParams,
        mut results: admin::ListTablesResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let manifests = load_tables(self.connection.data_dir(), &self.tenant).await?;
        let mut list = results.get().init_tables(manifests.len() as u32);
        for (i, manifest) in manifests.iter().enumerate() {
            write_table_info(list.reborrow().get(i as u32), manifest);
        }
        Ok(())
    }
}

/// Creates the table on this node: `Ok(Err(_))` when the engine refuses it (it exists, say).
async fn create_local(
    connection: &Rc<Connection>,
    tenant: &str,
    name: &str,
    columns: &[ColumnDef],
    options: &ImportOptions,
) -> Result<tessera_storage_engine::Result<TableManifest>, Error> {
    let data_dir = connection.data_dir().to_owned();
    let (tenant, name, columns, options) = (
        tenant.to_owned(),
        name.to_owned(),
        columns.to_vec(),
        options.clone(),
    );
    blocking(
        &connection.shared,
        move || -> tessera_storage_engine::Result<TableManifest> {
            if manifest::load(&data_dir, &tenant, &name)?.is_some() {
                return Err(tessera_storage_engine::Error::Import(format!(
                    "table {name} already exists"
                )));
            }
            let dir = manifest::table_dir(&data_dir, &tenant, &name);
            let existed = dir.exists();
            let schema = Schema::new(
                columns
                    .iter()
                    .map(|c| Field::new(&c.name, c.column_type.to_arrow(), c.nullable))
                    .collect::<Vec<_>>(),
            );
            let created = TableWriter::open(&data_dir, &tenant, &name, &schema, &options)
                .and_then(|writer| writer.finish())
                .and_then(|_| manifest::load(&data_dir, &tenant, &name))
                .and_then(|loaded| {
                    loaded.ok_or_else(|| {
                        tessera_storage_engine::Error::Internal("table vanished".into())
                    })
                });
            // A failed create leaves nothing behind (no lock, no empty directory), unless the
            // directory was there before or a manifest got published after all.
            if created.is_err()
                && !existed
                && !dir.join(manifest::MANIFEST_FILE).exists()
                && std::fs::remove_dir_all(&dir).is_ok()
            {
                let _ = manifest::sync_dir(&data_dir.join(&tenant));
            }
            created
        },
    )
    .await
}

/// The kind of a partition key column (`cluster::KEY_INT` or `KEY_STRING`), checked: a
/// partitioned table needs a key column of an integer or string type.
fn partition_key_type(
    columns: &[ColumnDef],
    key: &str,
    partitions: u32,
) -> Result<&'static str, Error> {
    const PARTITIONS_MAX: u32 = 1024;
    if partitions > PARTITIONS_MAX {
        return Err(error(
            "invalid",
            format!("{partitions} partitions; a table has at most {PARTITIONS_MAX}"),
        ));
    }
    if key.is_empty() {
        return Err(error(
            "invalid",
            "a partitioned table needs a partition key column (clusterPartitionKey)",
        ));
    }
    let column = columns
        .iter()
        .find(|c| c.name == key)
        .ok_or_else(|| error("invalid", format!("partition key {key} is not a column")))?;
    match column.column_type {
        ColumnType::Int64 | ColumnType::Int32 | ColumnType::Date | ColumnType::Timestamp => {
            Ok(crate::cluster::KEY_INT)
        }
        ColumnType::Utf8 => Ok(crate::cluster::KEY_STRING),
        other => Err(error(
            "invalid",
            format!(
                "partition key {key} is {}: use an integer, date, timestamp or string column",
                other.name()
            ),
        )),
    }
}

/// Where `create_replicated` describes the new table from.
enum Created {
    /// This node is one of its replicas.
    Here(TableManifest),
    /// Only peers hold it.
    Elsewhere(crate::client::TableInfo),
}

/// Creates a table in a cluster: placed by the coordinators (`replication`: factor and write
/// quorum, 0 for the defaults), then created on each replica: here by `local`, on peers through
/// their sessions. A replica that has the table already counts as created, so a call that
/// failed part way may be made again.
async fn create_replicated(
    cluster: &crate::cluster::Cluster,
    tenant: &str,
    spec: crate::client::TableSpec,
    replication: (u8, u8),
    partition: Option<crate::cluster::PartitionOf>,
    local: impl std::future::Future<
        Output = Result<tessera_storage_engine::Result<TableManifest>, Error>,
    >,
) -> Result<Created, Error> {
    let placement = cluster
        .place_table(tenant, &spec.name, replication.0, replication.1, partition)
        .await
        .map_err(|e| error("unavailable", e))?;
    let mut here = None;
    let mut elsewhere = None;
    let mut failures = Vec::new();
    let mut local = Some(local);
    for replica in &placement.replicas {
        if replica.node_id == cluster.node_id() {
            let created = local.take().expect("one replica per node").await?;
            match created {
                Ok(manifest) => here = Some(manifest),
                Err(e) if e.to_string().contains("already exists") => {}
                Err(e) => failures.push(format!("{}: {e}", replica.node_id)),
            }
            continue;
        }
        let created = async {
            let session = cluster
                .session(&replica.address, tenant, false)
                .await
                .map_err(|e| e.to_string())?;
            match session.create_table(spec.clone()).await {
                Ok(info) => Ok(Some(info)),
                Err(e) if e.to_string().contains("already exists") => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }
        .await;
        match created {
            Ok(info) => elsewhere = elsewhere.or(info),
            Err(e) => {
                cluster.forget_peer(&replica.address);
                failures.push(format!("{}: {e}", replica.node_id));
            }
        }
    }
    if !failures.is_empty() {
        return Err(error(
            "unavailable",
            format!(
                "table {} is placed on {} but could not be created on every replica ({}); \
                 call createTable again",
                spec.name,
                placement
                    .replicas
                    .iter()
                    .map(|r| r.node_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                failures.join("; ")
            ),
        ));
    }
    match (here, elsewhere) {
        (Some(manifest), _) => Ok(Created::Here(manifest)),
        (None, Some(info)) => Ok(Created::Elsewhere(info)),
        (None, None) => Err(error(
            "invalid",
            format!("table {} already exists", spec.name),
        )),
    }
}

impl AdminServer {
    /// Drops this node's copy of the table; whether it had one.
    async fn drop_here(&self, name: &str) -> Result<bool, Error> {
        let (data_dir, tenant, name) = (
            self.connection.data_dir().to_owned(),
            self.tenant.clone(),
            name.to_owned(),
        );
        let dropped = blocking(&self.connection.shared, move || {
            manifest::drop_table(&data_dir, &tenant, &name)
        })
        .await?
        .map_err(engine_error)?;
        let existed = dropped.is_some();
        if let Some(manifest) = dropped {
            self.connection.context.forget_tables(&[manifest]).await;
        }
        Ok(existed)
    }

    /// Drops a replicated table: every replica drops its copy (over peer sessions), then the
    /// coordinators remove its placement. A replica that cannot be reached fails the drop,
    /// naming it (the others' copies are gone; dropping again finishes it): a copy left on a
    /// node the catalog no longer places the table on would answer as a table of its own.
    /// In a cluster, unless this is a leader's replica session: the placements of `table`'s
    /// partitions, or of the table itself; none for a table the cluster does not place.
    async fn placements(&self, table: &str) -> Result<Vec<Arc<crate::cluster::Placement>>, Error> {
        let Some(cluster) = self.connection.shared.cluster.as_ref() else {
            return Ok(Vec::new());
        };
        if self.origin == Origin::Replica {
            return Ok(Vec::new());
        }
        let partitioned =
            super::partitioned::partitioned(&self.connection, self.origin, &self.tenant, table)
                .await?;
        Ok(match partitioned {
            Some((_, parts)) => parts,
            None => cluster.placement(&self.tenant, table).into_iter().collect(),
        })
    }

    /// Compacts this node's copy of `table`: (files removed, files written).
    async fn compact_here(&self, table: &str) -> Result<(u64, u64), Error> {
        let report = self
            .connection
            .context
            .compact_table(&self.tenant, table)
            .await
            .map_err(engine_error)?;
        Ok((report.files_removed, report.files_written))
    }

    /// Drops the date partitions before `before` of this node's copy of `table`.
    async fn drop_partitions_here(
        &self,
        table: &str,
        before: &str,
    ) -> Result<DroppedPartitions, Error> {
        let dropped = self
            .connection
            .context
            .drop_partitions_before(&self.tenant, table, before)
            .await
            .map_err(engine_error)?;
        Ok(DroppedPartitions {
            dates: dropped.dates,
            files: dropped.files.len() as u64,
            rows: dropped.rows,
        })
    }

    /// Drops the date partitions before `before` of a replicated table (or one partition) on
    /// every in-sync replica: as its leader, here and on each follower under one write pass
    /// (so a comparison of replicas sees the drop everywhere or nowhere), a follower that
    /// fails leaving the in-sync set (it is copied the table later); elsewhere, through the
    /// leader. The rows dropped are this replica's (the leader's).
    async fn drop_partitions_placed(
        &self,
        cluster: &crate::cluster::Cluster,
        placement: &crate::cluster::Placement,
        before: &str,
    ) -> Result<DroppedPartitions, Error> {
        let table = placement.table.as_str();
        if placement.leader != cluster.node_id() {
            if self.origin == Origin::Forwarded {
                return Err(error(
                    "unavailable",
                    format!(
                        "node {} does not lead table {table} (routing version {})",
                        cluster.node_id(),
                        cluster.routing_version()
                    ),
                ));
            }
            let leader = placement
                .reachable_leader()
                .map_err(|e| error("unavailable", e))?;
            let dropped = async {
                let session = cluster.session(&leader.address, &self.tenant, true).await?;
                session.drop_partitions_before(table, before).await
            };
            return dropped.await.map_err(|e| {
                cluster.forget_peer(&leader.address);
                passed_on(e, |e| format!("the table's leader {}: {e}", leader.node_id))
            });
        }
        let _pass = cluster.pass(&self.tenant, table).await;
        let placement = cluster
            .placement(&self.tenant, table)
            .filter(|p| p.leader == cluster.node_id())
            .ok_or_else(|| {
                error(
                    "unavailable",
                    format!("the leadership of {table} moved; nothing was dropped"),
                )
            })?;
        let dropped = self.drop_partitions_here(table, before).await?;
        let wait = cluster.replication_timeout;
        let followers = placement
            .replicas
            .iter()
            .filter(|r| r.node_id != cluster.node_id() && placement.is_in_sync(&r.node_id));
        let drops = followers.map(|replica| async move {
            let drop = async {
                let session = cluster
                    .session(&replica.address, &self.tenant, false)
                    .await?;
                session.drop_partitions_before(table, before).await
            };
            let outcome = match runtime::timeout(wait, drop).await {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err(format!("no answer within {wait:?}")),
            };
            if outcome.is_err() {
                cluster.forget_peer(&replica.address);
            }
            (replica.node_id.as_str(), outcome)
        });
        let mut unmarked = Vec::new();
        for (node, outcome) in futures::future::join_all(drops).await {
            let Err(why) = outcome else { continue };
            tracing::warn!(table = %table, node = %node, reason = %why, "a replica failed to drop partitions: taken out of the in-sync set");
            if let Err(e) = cluster.set_in_sync(&placement, node, false).await {
                unmarked.push(format!("{node}: {why}; it could not be marked behind: {e}"));
            }
        }
        if !unmarked.is_empty() {
            return Err(error(
                "unavailable",
                format!(
                    "the partitions of {table} before {before} are dropped on its leader but not \
                     on every in-sync replica ({}); drop them again",
                    unmarked.join("; ")
                ),
            ));
        }
        Ok(dropped)
    }

    async fn drop_replicated(
        &self,
        cluster: &crate::cluster::Cluster,
        placement: &crate::cluster::Placement,
    ) -> Result<bool, Error> {
        let table = placement.table.as_str();
        let mut failures = Vec::new();
        for replica in &placement.replicas {
            if replica.node_id == cluster.node_id() {
                self.drop_here(table).await?;
                continue;
            }
            let dropped = async {
                let session = cluster
                    .session(&replica.address, &self.tenant, false)
                    .await?;
                session.drop_table(table).await
            };
            if let Err(e) = dropped.await {
                cluster.forget_peer(&replica.address);
                failures.push(format!("{}: {e}", replica.node_id));
            }
        }
        if !failures.is_empty() {
            return Err(error(
                "unavailable",
                format!(
                    "table {table} is not dropped on every replica ({}); drop it again once \
                     they answer",
                    failures.join("; ")
                ),
            ));
        }
        cluster
            .drop_table(&self.tenant, table)
            .await
            .map_err(|e| error("unavailable", e))?;
        Ok(true)
    }
}
