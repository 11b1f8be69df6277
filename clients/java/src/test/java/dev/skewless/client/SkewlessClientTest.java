package dev.skewless.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.protobuf.Timestamp;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import dev.skewless.v1.ArrowCompression;
import dev.skewless.v1.FeatureStatus;
import dev.skewless.v1.FeatureVector;
import dev.skewless.v1.GetOnlineFeaturesRequest;
import dev.skewless.v1.GetOnlineFeaturesResponse;
import dev.skewless.v1.HistoricalQuery;
import dev.skewless.v1.Value;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Pure-logic tests: no server needed. */
class SkewlessClientTest {

  @Test
  void selectionBuildsTheGeneratedRequest() {
    GetOnlineFeaturesRequest request =
        Selection.featureService("driver_ranking")
            .toRequest(
                EntityColumn.int64s("driver_id", 1001, 1002), EntityColumn.strings("city", "Zürich"));
    assertEquals("driver_ranking", request.getFeatureService());
    assertFalse(request.getFullFeatureNames());
    assertEquals(1002, request.getEntitiesOrThrow("driver_id").getValues(1).getInt64Value());
    assertEquals("Zürich", request.getEntitiesOrThrow("city").getValues(0).getStringValue());

    GetOnlineFeaturesRequest list =
        Selection.features("v:a", "v").withFullFeatureNames().toRequest(EntityColumn.int32s("k", 7));
    assertEquals(2, list.getFeatures().getFeaturesCount());
    assertTrue(list.getFullFeatureNames());
    assertEquals(7, list.getEntitiesOrThrow("k").getValues(0).getInt32Value());
  }

  @Test
  void resultReadsByFeatureName() {
    Instant when = Instant.parse("2025-06-01T12:00:00.123456Z");
    GetOnlineFeaturesResponse response =
        GetOnlineFeaturesResponse.newBuilder()
            .addResults(
                FeatureVector.newBuilder()
                    .setName("conv_rate")
                    .addValues(Value.newBuilder().setDoubleValue(0.85))
                    .addValues(Value.getDefaultInstance())
                    .addStatuses(FeatureStatus.FEATURE_STATUS_PRESENT)
                    .addStatuses(FeatureStatus.FEATURE_STATUS_NOT_FOUND)
                    .addEventTimes(
                        Timestamp.newBuilder()
                            .setSeconds(when.getEpochSecond())
                            .setNanos(when.getNano()))
                    .addEventTimes(Timestamp.getDefaultInstance()))
            .build();
    OnlineResult result = new OnlineResult(response);
    assertEquals(2, result.rows());
    FeatureValue present = result.get("conv_rate", 0);
    assertTrue(present.isPresent());
    assertEquals(0.85, present.asDouble().orElseThrow());
    assertEquals(when, present.eventTime().orElseThrow());
    FeatureValue missing = result.get("conv_rate", 1);
    assertTrue(missing.isNull());
    assertTrue(missing.eventTime().isEmpty());
    assertThrows(IllegalArgumentException.class, () -> result.get("nope", 0));
  }

  @Test
  void exceptionExposesStatusAndDetails() {
    com.google.rpc.Status rich =
        com.google.rpc.Status.newBuilder()
            .setCode(Code.INVALID_ARGUMENT_VALUE)
            .setMessage("driver_id must be INT64")
            .addDetails(
                Any.pack(
                    ErrorInfo.newBuilder()
                        .setReason("WRONG_KEY_TYPE")
                        .setDomain("skewless.dev")
                        .putMetadata("join_key", "driver_id")
                        .build()))
            .addDetails(
                Any.pack(
                    BadRequest.newBuilder()
                        .addFieldViolations(
                            BadRequest.FieldViolation.newBuilder()
                                .setField("entities[driver_id]")
                                .setDescription("wrong type"))
                        .build()))
            .addDetails(
                Any.pack(
                    RetryInfo.newBuilder()
                        .setRetryDelay(com.google.protobuf.Duration.newBuilder().setNanos(200_000_000))
                        .build()))
            .build();
    SkewlessException e = SkewlessException.from(StatusProto.toStatusRuntimeException(rich));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
    assertEquals("driver_id must be INT64", e.statusMessage());
    assertEquals("WRONG_KEY_TYPE", e.reason());
    assertEquals("skewless.dev", e.domain());
    assertEquals("driver_id", e.metadata().get("join_key"));
    assertEquals("entities[driver_id]", e.fieldViolations().get(0).field());
    assertEquals(Duration.ofMillis(200), e.retryDelay());
    assertTrue(e.isRetryable());
  }

  @Test
  void builderNeedsAnExplicitTransport() {
    assertThrows(IllegalStateException.class, () -> SkewlessClient.builder("127.0.0.1:1").build());
  }

  @Test
  void historicalRequestBuildsTheGeneratedQuery() {
    HistoricalQuery byPath =
        HistoricalRequest.fromPath(
                "rows/*.parquet",
                Selection.features("v:a", "w").withFullFeatureNames())
            .labelTimeColumn("label_time")
            .batchSize(500)
            .toProto();
    assertEquals("rows/*.parquet", byPath.getPath());
    assertEquals(List.of("v:a", "w"), byPath.getFeatures().getFeaturesList());
    assertTrue(byPath.getFullFeatureNames());
    assertEquals("label_time", byPath.getLabelTimeColumn());
    assertEquals(500, byPath.getBatchSize());
    assertEquals(ArrowCompression.ARROW_COMPRESSION_NONE, byPath.getCompression());

    HistoricalQuery bySql =
        HistoricalRequest.fromSql("SELECT * FROM labels", Selection.featureService("svc"))
            .toProto();
    assertEquals("SELECT * FROM labels", bySql.getSql());
    assertEquals("svc", bySql.getFeatureService());
    assertEquals(HistoricalQuery.EntityRowsCase.SQL, bySql.getEntityRowsCase());
    assertThrows(
        IllegalArgumentException.class,
        () -> HistoricalRequest.fromSql("SELECT 1", Selection.featureService("svc")).batchSize(-1));
  }
}
