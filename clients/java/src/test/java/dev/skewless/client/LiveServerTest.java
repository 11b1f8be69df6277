package dev.skewless.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.skewless.v1.FeatureStatus;
import dev.skewless.v1.ListFeatureViewsRequest;
import io.grpc.Status;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Integration tests against a live server holding the contract fixture
 * (tests/integration/client_harness.py, described in docs/clients.md). They run when
 * SKEWLESS_ADDR=host:port is set and are skipped otherwise.
 */
class LiveServerTest {
  private static final Instant T1 = Instant.parse("2025-06-01T12:00:00.123456Z");
  private static final Instant T2 = Instant.parse("2025-06-01T13:30:00Z");
  private static final Instant STALE = Instant.parse("2001-02-03T04:05:06Z");
  private static SkewlessClient client;

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

  @Test
  void featureServiceOverEntitiesWithEveryStatus() {
    OnlineResult r =
        client.getOnlineFeatures(
            Selection.featureService("driver_ranking"),
            EntityColumn.int64s("driver_id", 1001, 1002, 1003, 9999),
            EntityColumn.int64s("customer_id", 2001, 2002, 8888, 2004));
    assertEquals(
        List.of("conv_rate", "acc_rate", "avg_daily_trips", "current_balance", "is_premium"),
        r.names());
    assertEquals(4, r.rows());

    FeatureValue rate = r.get("conv_rate", 0);
    assertTrue(rate.isPresent());
    assertEquals((double) 0.85f, rate.asDouble().orElseThrow());
    assertEquals(T1, rate.eventTime().orElseThrow());
    assertEquals(42L, r.get("avg_daily_trips", 0).asLong().orElseThrow());

    FeatureValue storedNull = r.get("conv_rate", 1);
    assertEquals(FeatureStatus.FEATURE_STATUS_NULL_VALUE, storedNull.status());
    assertTrue(storedNull.isNull());
    assertEquals(T2, storedNull.eventTime().orElseThrow());
    assertEquals(0.75, r.get("acc_rate", 1).asDouble().orElseThrow());

    for (String name : List.of("conv_rate", "acc_rate", "avg_daily_trips")) {
      FeatureValue stale = r.get(name, 2);
      assertEquals(FeatureStatus.FEATURE_STATUS_OUTSIDE_MAX_AGE, stale.status(), name);
      assertTrue(stale.isNull(), name);
      assertEquals(STALE, stale.eventTime().orElseThrow(), name);
      FeatureValue missing = r.get(name, 3);
      assertEquals(FeatureStatus.FEATURE_STATUS_NOT_FOUND, missing.status(), name);
      assertTrue(missing.eventTime().isEmpty(), name);
    }
    assertTrue(r.get("is_premium", 0).asBoolean().orElseThrow());
    assertEquals(FeatureStatus.FEATURE_STATUS_NOT_FOUND, r.get("current_balance", 2).status());
    assertEquals(FeatureStatus.FEATURE_STATUS_NULL_VALUE, r.get("is_premium", 3).status());
    assertEquals(-3.25, r.get("current_balance", 3).asDouble().orElseThrow());
  }

  @Test
  void featureListWithFullNames() {
    OnlineResult r =
        client.getOnlineFeatures(
            Selection.features("driver_stats:conv_rate", "customer_profile:segment")
                .withFullFeatureNames(),
            EntityColumn.int64s("driver_id", 1002, 1001),
            EntityColumn.int64s("customer_id", 2002, 2001));
    assertEquals(List.of("driver_stats__conv_rate", "customer_profile__segment"), r.names());
    assertEquals("économie ✓", r.get("customer_profile__segment", 0).asString().orElseThrow());
    assertEquals((double) 0.85f, r.get("driver_stats__conv_rate", 1).asDouble().orElseThrow());
  }

  @Test
  void unknownFeatureIsNotFoundWithErrorInfo() {
    SkewlessException e =
        assertThrows(
            SkewlessException.class,
            () ->
                client.getOnlineFeatures(
                    Selection.features("driver_stats:no_such_feature"),
                    EntityColumn.int64s("driver_id", 1001)));
    assertEquals(Status.Code.NOT_FOUND, e.code());
    assertFalse(e.reason().isEmpty());
    assertEquals("skewless.dev", e.domain());
  }

  @Test
  void wrongKeyTypeIsInvalidArgumentWithFieldViolation() {
    SkewlessException e =
        assertThrows(
            SkewlessException.class,
            () ->
                client.getOnlineFeatures(
                    Selection.features("driver_stats"), EntityColumn.strings("driver_id", "1001")));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
    assertFalse(e.fieldViolations().isEmpty());
  }

  @Test
  void deadlineIsEnforced() {
    SkewlessException e =
        assertThrows(
            SkewlessException.class,
            () ->
                client.getOnlineFeatures(
                    Duration.ofNanos(1),
                    Selection.features("driver_stats"),
                    EntityColumn.int64s("driver_id", 1001)));
    assertEquals(Status.Code.DEADLINE_EXCEEDED, e.code());
  }

  @Test
  void registryThroughTheGeneratedStub() {
    var views = client.registry().listFeatureViews(ListFeatureViewsRequest.getDefaultInstance());
    assertTrue(
        views.getFeatureViewsList().stream().anyMatch(v -> v.getName().equals("driver_stats")),
        views.toString());
  }
}
