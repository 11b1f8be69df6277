package dev.skewless.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A failed call: the gRPC status code and message, and its parsed {@code google.rpc} details
 * ({@code ErrorInfo}, {@code BadRequest}, {@code RetryInfo}).
 */
public final class SkewlessException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /**
   * One bad field of a request ({@code google.rpc.BadRequest.FieldViolation}).
   *
   * @param field the request field path, e.g. {@code entities[driver_id]}
   * @param description what is wrong with it
   */
  public record FieldViolation(String field, String description) {}

  private final Status.Code code;
  private final String statusMessage;
  private final String reason;
  private final String domain;
  private final Map<String, String> metadata;
  private final List<FieldViolation> fieldViolations;
  private final Duration retryDelay;
  private final transient com.google.rpc.Status status;

  private SkewlessException(
      Status.Code code,
      String statusMessage,
      String reason,
      String domain,
      Map<String, String> metadata,
      List<FieldViolation> fieldViolations,
      Duration retryDelay,
      com.google.rpc.Status status,
      Throwable cause) {
    super(
        "skewless: " + code + (reason.isEmpty() ? "" : " (" + reason + ")") + ": " + statusMessage,
        cause);
    this.code = code;
    this.statusMessage = statusMessage;
    this.reason = reason;
    this.domain = domain;
    this.metadata = Map.copyOf(metadata);
    this.fieldViolations = List.copyOf(fieldViolations);
    this.retryDelay = retryDelay;
    this.status = status;
  }

  /** Parses the status and details of a failed gRPC call. */
  public static SkewlessException from(StatusRuntimeException e) {
    com.google.rpc.Status rich = StatusProto.fromThrowable(e);
    Status status = e.getStatus();
    String message = status.getDescription() == null ? "" : status.getDescription();
    String reason = "";
    String domain = "";
    Map<String, String> metadata = Map.of();
    List<FieldViolation> violations = new ArrayList<>();
    Duration retryDelay = Duration.ZERO;
    if (rich != null) {
      for (Any detail : rich.getDetailsList()) {
        try {
          if (detail.is(ErrorInfo.class)) {
            ErrorInfo info = detail.unpack(ErrorInfo.class);
            reason = info.getReason();
            domain = info.getDomain();
            metadata = info.getMetadataMap();
          } else if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
              violations.add(new FieldViolation(v.getField(), v.getDescription()));
            }
          } else if (detail.is(RetryInfo.class)) {
            com.google.protobuf.Duration d = detail.unpack(RetryInfo.class).getRetryDelay();
            retryDelay = Duration.ofSeconds(d.getSeconds(), d.getNanos());
          }
        } catch (InvalidProtocolBufferException ignored) {
          // A malformed detail is skipped; the code and message still stand.
        }
      }
    }
    return new SkewlessException(
        status.getCode(), message, reason, domain, metadata, violations, retryDelay, rich, e);
  }

  /** The canonical gRPC status code (NOT_FOUND, INVALID_ARGUMENT, ...). */
  public Status.Code code() {
    return code;
  }

  /** The server's actionable message. */
  public String statusMessage() {
    return statusMessage;
  }

  /** {@code ErrorInfo.reason}: a stable UPPER_SNAKE identifier of the error kind. */
  public String reason() {
    return reason;
  }

  /** {@code ErrorInfo.domain} ({@code skewless.dev} for errors raised by skewless). */
  public String domain() {
    return domain;
  }

  /** The dynamic values the message mentions ({@code ErrorInfo.metadata}). */
  public Map<String, String> metadata() {
    return metadata;
  }

  /** The bad request fields ({@code BadRequest}), empty if none. */
  public List<FieldViolation> fieldViolations() {
    return fieldViolations;
  }

  /** {@code RetryInfo.retry_delay}, zero if absent. */
  public Duration retryDelay() {
    return retryDelay;
  }

  /** Whether a retry may succeed (UNAVAILABLE, or a RetryInfo detail). */
  public boolean isRetryable() {
    return code == Status.Code.UNAVAILABLE || !retryDelay.isZero();
  }

  /** The {@code google.rpc.Status} as received, or null when the server sent none. */
  public com.google.rpc.Status richStatus() {
    return status;
  }
}
