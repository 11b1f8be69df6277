package dev.skewless.client;

import dev.skewless.v1.ArrowRecordBatch;
import dev.skewless.v1.GetHistoricalFeaturesResponse;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.channels.Channels;
import org.apache.arrow.flatbuf.MessageHeader;
import org.apache.arrow.memory.ArrowBuf;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.vector.ipc.ArrowReader;
import org.apache.arrow.vector.ipc.ReadChannel;
import org.apache.arrow.vector.ipc.message.MessageMetadataResult;
import org.apache.arrow.vector.ipc.message.MessageSerializer;
import org.apache.arrow.vector.types.pojo.Schema;

/**
 * The result of a historical retrieval as an Arrow stream: each {@link #loadNextBatch()} loads
 * the next record batch of the server's response stream into {@link #getVectorSchemaRoot()}.
 * Rows come in input order, one per entity row: the entity row columns, then the features.
 *
 * <pre>{@code
 * try (BufferAllocator allocator = new RootAllocator();
 *     HistoricalReader reader = client.getHistoricalFeatures(request, allocator)) {
 *   VectorSchemaRoot root = reader.getVectorSchemaRoot();
 *   while (reader.loadNextBatch()) {
 *     // root.getRowCount() rows; root.getVector("conv_rate"), ...
 *   }
 * }
 * }</pre>
 *
 * <p>Closing the reader before the end cancels the call on the server. A call that fails midway
 * throws {@link SkewlessException} from {@code loadNextBatch}.
 */
public final class HistoricalReader extends ArrowReader {
  private final HistoricalCall call;
  private final byte[] schema;
  private long bytesRead;
  private long rows;

  HistoricalReader(BufferAllocator allocator, HistoricalCall call, byte[] schema) {
    super(allocator);
    this.call = call;
    this.schema = schema;
    this.bytesRead = schema.length;
  }

  /** Waits for the first response of a started call, which must carry the schema. */
  static HistoricalReader open(BufferAllocator allocator, HistoricalCall call) {
    GetHistoricalFeaturesResponse first = call.next();
    if (first == null) {
      throw new IllegalStateException("the server ended GetHistoricalFeatures without a schema");
    }
    if (!first.hasArrowSchema() || first.hasArrowRecordBatch()) {
      call.cancel();
      throw new IllegalStateException("the first GetHistoricalFeatures response has no schema");
    }
    return new HistoricalReader(
        allocator, call, first.getArrowSchema().getSerializedSchema().toByteArray());
  }

  @Override
  protected Schema readSchema() throws IOException {
    return MessageSerializer.deserializeSchema(channel(schema));
  }

  @Override
  public boolean loadNextBatch() throws IOException {
    prepareLoadNextBatch();
    GetHistoricalFeaturesResponse response = call.next();
    if (response == null) {
      return false;
    }
    if (!response.hasArrowRecordBatch() || response.hasArrowSchema()) {
      call.cancel();
      throw new IOException("a GetHistoricalFeatures response after the first has no record batch");
    }
    ArrowRecordBatch message = response.getArrowRecordBatch();
    byte[] data = message.getSerializedRecordBatch().toByteArray();
    bytesRead += data.length;
    // The IPC message: metadata (read from the bytes), then the body, copied into Arrow memory
    // (no java.nio internals involved, so the JVM needs no --add-opens flag).
    ReadChannel in = channel(data);
    MessageMetadataResult metadata = MessageSerializer.readMessage(in);
    if (metadata == null || metadata.headerType() != MessageHeader.RecordBatch) {
      call.cancel();
      throw new IOException("a GetHistoricalFeatures response holds no Arrow record batch");
    }
    long offset = in.bytesRead();
    long length = metadata.getMessageBodyLength();
    if (length < 0 || offset + length > data.length) {
      call.cancel();
      throw new IOException("an Arrow record batch is truncated: body of " + length + " bytes");
    }
    ArrowBuf body = allocator.buffer(length);
    org.apache.arrow.vector.ipc.message.ArrowRecordBatch batch;
    try {
      body.setBytes(0, data, (int) offset, length);
    } catch (RuntimeException e) {
      body.close();
      throw e;
    }
    batch = MessageSerializer.deserializeRecordBatch(metadata, body); // takes over the body
    if (batch.getLength() != message.getRowCount()) {
      batch.close();
      call.cancel();
      throw new IOException(
          "a record batch holds "
              + batch.getLength()
              + " rows but its response says row_count="
              + message.getRowCount());
    }
    loadRecordBatch(batch); // closes the batch
    rows += message.getRowCount();
    return true;
  }

  /** The number of rows loaded so far. */
  public long rowsRead() {
    return rows;
  }

  @Override
  public long bytesRead() {
    return bytesRead;
  }

  @Override
  protected void closeReadSource() {
    call.cancel();
  }

  private static ReadChannel channel(byte[] data) {
    return new ReadChannel(Channels.newChannel(new ByteArrayInputStream(data)));
  }
}
