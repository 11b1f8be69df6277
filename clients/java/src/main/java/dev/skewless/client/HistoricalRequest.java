package dev.skewless.client;

import dev.skewless.v1.ArrowCompression;
import dev.skewless.v1.HistoricalQuery;
import java.util.Objects;

/**
 * What a historical retrieval joins and where the server reads the entity rows (join keys, a
 * label time column, any other columns) from: a Parquet or CSV file path or glob, or a DuckDB
 * {@code SELECT} over registered data sources.
 *
 * <pre>{@code
 * HistoricalRequest.fromPath("labels/*.parquet", Selection.featureService("driver_ranking"))
 *     .labelTimeColumn("label_time")
 *     .batchSize(65_536)
 * }</pre>
 *
 * <p>Results come back uncompressed ({@code ARROW_COMPRESSION_NONE}): decompressing LZ4 or ZSTD
 * batches needs Arrow's {@code arrow-compression} module, which this client does not ship.
 */
public final class HistoricalRequest {
  private final Selection selection;
  private final String path;
  private final String sql;
  private final String labelTimeColumn;
  private final int batchSize;

  private HistoricalRequest(
      Selection selection, String path, String sql, String labelTimeColumn, int batchSize) {
    this.selection = Objects.requireNonNull(selection, "selection");
    this.path = path;
    this.sql = sql;
    this.labelTimeColumn = labelTimeColumn;
    this.batchSize = batchSize;
  }

  /**
   * Entity rows from a Parquet or CSV file path or glob that the server reads (relative paths are
   * relative to its repository).
   */
  public static HistoricalRequest fromPath(String path, Selection selection) {
    return new HistoricalRequest(selection, Objects.requireNonNull(path, "path"), null, "", 0);
  }

  /** Entity rows from a DuckDB {@code SELECT} over registered data sources, run by the server. */
  public static HistoricalRequest fromSql(String sql, Selection selection) {
    return new HistoricalRequest(selection, null, Objects.requireNonNull(sql, "sql"), "", 0);
  }

  /** The column holding each row's label time ({@code event_timestamp} when not set). */
  public HistoricalRequest labelTimeColumn(String column) {
    return new HistoricalRequest(
        selection, path, sql, Objects.requireNonNull(column, "column"), batchSize);
  }

  /** Rows per returned record batch, at most 1,048,576; 0 (the default) lets the server choose. */
  public HistoricalRequest batchSize(int rows) {
    if (rows < 0) {
      throw new IllegalArgumentException("batchSize must be >= 0, got " + rows);
    }
    return new HistoricalRequest(selection, path, sql, labelTimeColumn, rows);
  }

  /** Builds the generated query message. */
  public HistoricalQuery toProto() {
    HistoricalQuery.Builder query = selection.toHistoricalQuery();
    if (path != null) {
      query.setPath(path);
    } else {
      query.setSql(sql);
    }
    return query
        .setLabelTimeColumn(labelTimeColumn)
        .setBatchSize(batchSize)
        .setCompression(ArrowCompression.ARROW_COMPRESSION_NONE)
        .build();
  }
}
