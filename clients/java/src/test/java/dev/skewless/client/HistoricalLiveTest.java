package dev.skewless.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.skewless.v1.GetHistoricalFeaturesRequest;
import dev.skewless.v1.GetHistoricalFeaturesResponse;
import dev.skewless.v1.HistoricalServiceGrpc;
import io.grpc.CallOptions;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.stub.ClientCalls;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.memory.RootAllocator;
import org.apache.arrow.vector.BigIntVector;
import org.apache.arrow.vector.BitVector;
import org.apache.arrow.vector.FieldVector;
import org.apache.arrow.vector.Float4Vector;
import org.apache.arrow.vector.Float8Vector;
import org.apache.arrow.vector.TimeStampMicroTZVector;
import org.apache.arrow.vector.VarCharVector;
import org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.arrow.vector.types.pojo.Field;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Historical retrieval against a live server holding the contract fixture, whose offline history
 * and entity rows file come from tests/integration/contract_history.py (docs/clients.md). Runs
 * when SKEWLESS_ADDR=host:port is set and is skipped otherwise.
 */
class HistoricalLiveTest {
  /** The contract fixture's entity rows file, relative to the server's repository. */
  private static final String ROWS = "historical_rows.parquet";

  /**
   * avg_daily_trips and current_balance for each entity row (null: no value): the T1 rows, an
   * earlier row, a stored null at an inclusive label time, a row outside the TTL and one inside
   * it, an unknown driver, a label time before all history, an event-time tie broken by created
   * time, an exact event time, the newest rows.
   */
  private static final List<Long> TRIPS = list(42L, 40L, 7L, null, 3L, null, null, 2L, 42L, 44L);

  private static final List<Double> BALANCE =
      list(12.5, null, -3.25, 12.5, null, 0.1, null, 12.5, 12.5, 13.0);

  private static SkewlessClient client;
  private BufferAllocator allocator;

  @SafeVarargs
  private static <T> List<T> list(T... values) {
    List<T> out = new ArrayList<>();
    for (T v : values) {
      out.add(v);
    }
    return out;
  }

  @BeforeAll
  static void connect() {
    String addr = System.getenv("SKEWLESS_ADDR");
    assumeTrue(addr != null && !addr.isEmpty(), "SKEWLESS_ADDR is not set: no live server");
    client =
        SkewlessClient.builder(addr).usePlaintext().defaultTimeout(Duration.ofSeconds(10)).build();
  }

  @AfterAll
  static void close() {
    if (client != null) {
      client.close();
    }
  }

  @BeforeEach
  void allocate() {
    allocator = new RootAllocator();
  }

  @AfterEach
  void everyBufferWasReleased() {
    assertEquals(0, allocator.getAllocatedMemory(), "Arrow memory leaked");
    allocator.close();
  }

  /** Every batch of a result, each column's values collected across batches. */
  private record Result(List<String> names, List<Integer> batches, List<List<Object>> columns) {
    List<Object> column(String name) {
      return columns.get(names.indexOf(name));
    }
  }

  private Result read(HistoricalRequest request) throws IOException {
    try (HistoricalReader reader = client.getHistoricalFeatures(request, allocator)) {
      VectorSchemaRoot root = reader.getVectorSchemaRoot();
      List<String> names = root.getSchema().getFields().stream().map(Field::getName).toList();
      List<Integer> batches = new ArrayList<>();
      List<List<Object>> columns = new ArrayList<>();
      names.forEach(n -> columns.add(new ArrayList<>()));
      while (reader.loadNextBatch()) {
        batches.add(root.getRowCount());
        for (int c = 0; c < names.size(); c++) {
          FieldVector vector = root.getVector(c);
          for (int i = 0; i < root.getRowCount(); i++) {
            columns.get(c).add(value(vector, i));
          }
        }
      }
      assertEquals(batches.stream().mapToLong(Integer::longValue).sum(), reader.rowsRead());
      return new Result(names, batches, columns);
    }
  }

  private static Object value(FieldVector vector, int row) {
    if (vector.isNull(row)) {
      return null;
    }
    if (vector instanceof BigIntVector v) {
      return v.get(row);
    }
    if (vector instanceof Float4Vector v) {
      return v.get(row);
    }
    if (vector instanceof Float8Vector v) {
      return v.get(row);
    }
    if (vector instanceof BitVector v) {
      return v.get(row) != 0;
    }
    if (vector instanceof VarCharVector v) {
      return new String(v.get(row), StandardCharsets.UTF_8);
    }
    if (vector instanceof TimeStampMicroTZVector v) {
      long micros = v.get(row);
      return Instant.ofEpochSecond(
          Math.floorDiv(micros, 1_000_000L), Math.floorMod(micros, 1_000_000L) * 1000L);
    }
    throw new AssertionError("unexpected vector " + vector.getField());
  }

  @Test
  void featureServiceInBatchesOfFour() throws IOException {
    Result r =
        read(
            HistoricalRequest.fromPath(ROWS, Selection.featureService("driver_ranking"))
                .batchSize(4));
    assertEquals(
        List.of(
            "driver_id",
            "customer_id",
            "event_timestamp",
            "trip_id",
            "label",
            "conv_rate",
            "acc_rate",
            "avg_daily_trips",
            "current_balance",
            "is_premium"),
        r.names());
    assertEquals(List.of(4, 4, 2), r.batches());
    assertEquals(TRIPS, r.column("avg_daily_trips"));
    assertEquals(BALANCE, r.column("current_balance"));
    List<Object> rates = r.column("conv_rate");
    assertEquals(0.85f, rates.get(0));
    assertNull(rates.get(2), "stored null");
    assertNull(rates.get(3), "outside the TTL");
    assertEquals(0.1f, rates.get(4), "inside the TTL");
    assertEquals(true, r.column("is_premium").get(0));
    assertNull(r.column("is_premium").get(2), "stored null");
    // Input columns come back as sent, in input order, label times to the microsecond.
    assertEquals(Instant.parse("2025-06-01T13:00:00.123456Z"), r.column("event_timestamp").get(0));
    assertEquals(
        List.of("t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"), r.column("trip_id"));
  }

  @Test
  void featureListWithFullNames() throws IOException {
    Result r =
        read(
            HistoricalRequest.fromPath(
                ROWS,
                Selection.features("driver_stats:conv_rate", "customer_profile:segment")
                    .withFullFeatureNames()));
    assertEquals("customer_profile__segment", r.names().get(6));
    assertEquals(List.of(10), r.batches());
    assertEquals(
        list(
            "premium", null, "budget", "premium", null, "économie ✓", null, "premium", "premium",
            "premium"),
        r.column("customer_profile__segment"));
    assertEquals(0.85f, r.column("driver_stats__conv_rate").get(8), "exact event time");
  }

  /** Responses as received, before the generated type parses them. */
  private static final class RawBytes implements MethodDescriptor.Marshaller<byte[]> {
    @Override
    public InputStream stream(byte[] value) {
      return new ByteArrayInputStream(value);
    }

    @Override
    public byte[] parse(InputStream stream) {
      try {
        return stream.readAllBytes();
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
  }

  private static int indexOf(byte[] haystack, byte[] needle) {
    outer:
    for (int i = 0; i + needle.length <= haystack.length; i++) {
      for (int j = 0; j < needle.length; j++) {
        if (haystack[i + j] != needle[j]) {
          continue outer;
        }
      }
      return i;
    }
    return -1;
  }

  @Test
  void responsesParseWithTheGeneratedTypes() throws Exception {
    MethodDescriptor<GetHistoricalFeaturesRequest, byte[]> method =
        HistoricalServiceGrpc.getGetHistoricalFeaturesMethod().toBuilder(
                ProtoUtils.marshaller(GetHistoricalFeaturesRequest.getDefaultInstance()),
                new RawBytes())
            .build();
    GetHistoricalFeaturesRequest request =
        GetHistoricalFeaturesRequest.newBuilder()
            .setQuery(
                HistoricalRequest.fromPath(ROWS, Selection.featureService("driver_ranking"))
                    .batchSize(3)
                    .toProto())
            .build();
    // One request, then half-close: the client side of GetHistoricalFeatures for a path query.
    Iterator<byte[]> stream =
        ClientCalls.blockingServerStreamingCall(
            client.channel(),
            method,
            CallOptions.DEFAULT.withDeadlineAfter(10, TimeUnit.SECONDS),
            request);
    List<byte[]> raw = new ArrayList<>();
    stream.forEachRemaining(raw::add);
    assertEquals(5, raw.size(), "a schema, then 4 batches of at most 3 rows");

    GetHistoricalFeaturesResponse first = GetHistoricalFeaturesResponse.parseFrom(raw.get(0));
    assertTrue(first.hasArrowSchema());
    assertFalse(first.hasArrowRecordBatch());
    long rows = 0;
    for (byte[] data : raw.subList(1, raw.size())) {
      GetHistoricalFeaturesResponse response = GetHistoricalFeaturesResponse.parseFrom(data);
      assertTrue(response.hasArrowRecordBatch());
      assertFalse(response.hasArrowSchema());
      assertTrue(response.getUnknownFields().asMap().isEmpty());
      assertTrue(response.getArrowRecordBatch().getUnknownFields().asMap().isEmpty());
      rows += response.getArrowRecordBatch().getRowCount();
      // The server's pre-built encoding is not protobuf-java's (its length varints are padded
      // so that the IPC message sits 8-byte aligned), yet it parses to the same message.
      assertTrue(
          data.length > response.getSerializedSize(),
          data.length + " bytes, no larger than the minimal " + response.getSerializedSize());
      byte[] ipc = response.getArrowRecordBatch().getSerializedRecordBatch().toByteArray();
      int at = indexOf(data, ipc);
      assertTrue(at >= 0 && at % 8 == 0, "IPC message at offset " + at);
      byte[] again = response.toByteArray();
      assertEquals(response, GetHistoricalFeaturesResponse.parseFrom(again));
      assertFalse(Arrays.equals(data, again), "the server's bytes are not the minimal encoding");
    }
    assertEquals(10, rows, "row_count adds up to the entity rows");
  }

  @Test
  void failuresAreStatusesWithDetails() {
    SkewlessException unknown =
        assertThrows(
            SkewlessException.class,
            () ->
                read(
                    HistoricalRequest.fromPath(
                        ROWS, Selection.features("driver_stats:no_such_feature"))));
    assertEquals(Status.Code.NOT_FOUND, unknown.code());
    assertEquals("FEATURE_NOT_FOUND", unknown.reason());

    SkewlessException missing =
        assertThrows(
            SkewlessException.class,
            () ->
                read(
                    HistoricalRequest.fromPath(
                        "no_rows.parquet", Selection.featureService("driver_ranking"))));
    assertEquals(Status.Code.INVALID_ARGUMENT, missing.code());
    assertEquals("query.path", missing.fieldViolations().get(0).field());

    SkewlessException late =
        assertThrows(
            SkewlessException.class,
            () ->
                client.getHistoricalFeatures(
                    Duration.ofNanos(1),
                    HistoricalRequest.fromPath(ROWS, Selection.featureService("driver_ranking")),
                    allocator));
    assertEquals(Status.Code.DEADLINE_EXCEEDED, late.code());
  }

  @Test
  void closingEarlyCancelsAndTheServerKeepsServing() throws IOException {
    try (HistoricalReader reader =
        client.getHistoricalFeatures(
            HistoricalRequest.fromPath(ROWS, Selection.featureService("driver_ranking"))
                .batchSize(1),
            allocator)) {
      assertTrue(reader.loadNextBatch());
      assertEquals(1, reader.getVectorSchemaRoot().getRowCount());
    }
    Result again =
        read(HistoricalRequest.fromPath(ROWS, Selection.featureService("driver_ranking")));
    assertEquals(List.of(10), again.batches());
    assertArrayEquals(TRIPS.toArray(), again.column("avg_daily_trips").toArray());
  }
}
