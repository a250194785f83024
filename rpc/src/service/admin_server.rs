//! `Admin`: table creation (the whole spec validated up front) and removal.

use super::*;

pub(super) struct AdminServer {
    pub(super) connection: Rc<Connection>,
    pub(super) tenant: String,
    pub(super) identity: Identity,
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
        let compression = match spec.get_compression()? {
            WireCompression::Snappy => Compression::Snappy,
            WireCompression::Zstd => Compression::Zstd,
            WireCompression::None => Compression::None,
        };
        let options = ImportOptions {
            partition: Some(PartitionSpec {
                time_column,
                columns: partition_by,
            }),
            writer: Some(WriterSettings {
                compression,
                ..WriterSettings::default()
            }),
            ..ImportOptions::default()
        };
        let data_dir = self.connection.data_dir().to_owned();
        let tenant = self.tenant.clone();
        let manifest = blocking(
            &self.connection.shared,
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
        let data_dir = self.connection.data_dir().to_owned();
        let tenant = self.tenant.clone();
        let dropped = blocking(&self.connection.shared, move || {
            manifest::drop_table(&data_dir, &tenant, &name)
        })
        .await?
        .map_err(engine_error)?;
        let existed = dropped.is_some();
        if let Some(manifest) = dropped {
            self.connection.context.forget_tables(&[manifest]).await;
        }
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
        let dropped = self
            .connection
            .context
            .drop_partitions_before(&self.tenant, &name, &before)
            .await
            .map_err(engine_error)?;
        let mut results = results.get();
        results.set_files(dropped.files.len() as u64);
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
        let report = self
            .connection
            .context
            .compact_table(&self.tenant, &name)
            .await
            .map_err(engine_error)?;
        let mut results = results.get();
        results.set_files_removed(report.files_removed);
        results.set_files_written(report.files_written);
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
