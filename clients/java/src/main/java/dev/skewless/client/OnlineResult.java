package dev.skewless.client;

import com.google.protobuf.Timestamp;
import dev.skewless.v1.FeatureStatus;
import dev.skewless.v1.FeatureVector;
import dev.skewless.v1.GetOnlineFeaturesResponse;
import dev.skewless.v1.Value;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/** A {@code GetOnlineFeatures} response indexed by feature name. */
public final class OnlineResult {
  private final GetOnlineFeaturesResponse response;
  private final Map<String, FeatureVector> byName = new HashMap<>();

  /** Indexes a response by feature name. */
  public OnlineResult(GetOnlineFeaturesResponse response) {
    this.response = response;
    for (FeatureVector vector : response.getResultsList()) {
      byName.put(vector.getName(), vector);
    }
  }

  /** The message as received. */
  public GetOnlineFeaturesResponse response() {
    return response;
  }

  /** The feature names in response order. */
  public List<String> names() {
    List<String> names = new ArrayList<>();
    for (FeatureVector vector : response.getResultsList()) {
      names.add(vector.getName());
    }
    return names;
  }

  /** The number of entity rows. */
  public int rows() {
    return response.getResultsCount() == 0 ? 0 : response.getResults(0).getStatusesCount();
  }

  /** Whether the response holds a feature of that name. */
  public boolean has(String feature) {
    return byName.containsKey(feature);
  }

  /**
   * One feature's value for one entity row (rows in request order).
   *
   * @throws IllegalArgumentException the feature is not in the response or the row is out of range
   */
  public FeatureValue get(String feature, int row) {
    FeatureVector vector = byName.get(feature);
    if (vector == null) {
      throw new IllegalArgumentException("no feature '" + feature + "' in the response: " + names());
    }
    if (row < 0 || row >= vector.getStatusesCount()) {
      throw new IllegalArgumentException("row " + row + " out of range 0.." + rows());
    }
    Value value = row < vector.getValuesCount() ? vector.getValues(row) : Value.getDefaultInstance();
    FeatureStatus status = vector.getStatuses(row);
    Optional<Instant> eventTime = Optional.empty();
    if (row < vector.getEventTimesCount()) {
      eventTime = toInstant(vector.getEventTimes(row));
    }
    return new FeatureValue(value, status, eventTime);
  }

  /** A protobuf timestamp as an Instant; the unset (epoch zero) timestamp is empty. */
  public static Optional<Instant> toInstant(Timestamp ts) {
    if (ts.getSeconds() == 0 && ts.getNanos() == 0) {
      return Optional.empty();
    }
    return Optional.of(Instant.ofEpochSecond(ts.getSeconds(), ts.getNanos()));
  }
}
