package dev.skewless.client;

import dev.skewless.v1.FeatureStatus;
import dev.skewless.v1.Value;
import java.time.Instant;
import java.util.Optional;

/**
 * One feature of one entity row: its value, status and event time.
 *
 * @param value the stored value; null (kind unset or {@code null_value}) unless PRESENT
 * @param status whether the value is present, null, missing or older than the TTL
 * @param eventTime the event time of the stored row (UTC); empty when NOT_FOUND
 */
public record FeatureValue(Value value, FeatureStatus status, Optional<Instant> eventTime) {

  /** Whether the status is PRESENT. */
  public boolean isPresent() {
    return status == FeatureStatus.FEATURE_STATUS_PRESENT;
  }

  /** Whether the value is null (for any status). */
  public boolean isNull() {
    return value.getKindCase() == Value.KindCase.KIND_NOT_SET
        || value.getKindCase() == Value.KindCase.NULL_VALUE;
  }

  /** An INT64 or INT32 value; empty for null or another type. */
  public Optional<Long> asLong() {
    return switch (value.getKindCase()) {
      case INT64_VALUE -> Optional.of(value.getInt64Value());
      case INT32_VALUE -> Optional.of((long) value.getInt32Value());
      default -> Optional.empty();
    };
  }

  /** A FLOAT64 or FLOAT32 value; empty for null or another type. */
  public Optional<Double> asDouble() {
    return switch (value.getKindCase()) {
      case DOUBLE_VALUE -> Optional.of(value.getDoubleValue());
      case FLOAT_VALUE -> Optional.of((double) value.getFloatValue());
      default -> Optional.empty();
    };
  }

  /** A STRING value; empty for null or another type. */
  public Optional<String> asString() {
    return value.getKindCase() == Value.KindCase.STRING_VALUE
        ? Optional.of(value.getStringValue())
        : Optional.empty();
  }

  /** A BOOL value; empty for null or another type. */
  public Optional<Boolean> asBoolean() {
    return value.getKindCase() == Value.KindCase.BOOL_VALUE
        ? Optional.of(value.getBoolValue())
        : Optional.empty();
  }
}
