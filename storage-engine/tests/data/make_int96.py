# Writes storage-engine/tests/data/int96-timestamps.parquet: legacy INT96 timestamps as
# Impala/Spark/older pyarrow write them (pyarrow, use_deprecated_int96_timestamps=True).
import pyarrow as pa, pyarrow.parquet as pq
ns = [
    0,                          # 1970-01-01 00:00:00
    -1,                         # 1969-12-31 23:59:59.999999999
    -1_500,                     # 1969-12-31 23:59:59.999998500
    999,                        # 1970-01-01 00:00:00.000000999
    1_709_210_096_789_012_345,  # 2024-02-29 12:34:56.789012345
    -2_208_988_800_000_000_001, # 1899-12-31 23:59:59.999999999
    None,
    -9_223_372_036_854_775_000, # 1677-09-21 00:12:43.145224808, near the int64-nanosecond floor
]
ts = pa.array(ns, type=pa.timestamp("ns"))
table = pa.table({"id": pa.array(range(len(ns)), type=pa.int64()), "ts": ts})
pq.write_table(table, "int96-timestamps.parquet", use_deprecated_int96_timestamps=True,
               compression="none")
# Dates no int64 of nanoseconds holds: written from microseconds.
us = pa.array([-12_212_553_600_000_000, 253_402_300_799_999_999], type=pa.timestamp("us"))  # 1583-01-01, 9999-12-31 23:59:59.999999
pq.write_table(pa.table({"id": pa.array([0, 1], type=pa.int64()), "ts": us}),
               "int96-far-timestamps.parquet", use_deprecated_int96_timestamps=True,
               compression="none")
for name in ["int96-timestamps.parquet", "int96-far-timestamps.parquet"]:
    meta = pq.ParquetFile(name).metadata
    print(name, meta.schema.column(1).physical_type, meta.created_by)
