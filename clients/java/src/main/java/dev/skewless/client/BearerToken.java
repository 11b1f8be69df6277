package dev.skewless.client;

import io.grpc.CallCredentials;
import io.grpc.Metadata;
import io.grpc.Status;
import java.util.Objects;
import java.util.concurrent.Executor;
import java.util.function.Supplier;

/**
 * Call credentials that send {@code authorization: Bearer <token>} with every call.
 *
 * <p>The token comes from a supplier asked once per call (on gRPC's application executor, so it
 * may block to refresh an expiring token); a supplier that throws or returns an empty token fails
 * the call with UNAVAILABLE before anything is sent, as the Go and Python clients do. The header
 * is sent on plaintext channels too, since plaintext is an explicit choice ({@code
 * usePlaintext()}) for loopback or sidecar connections.
 */
public final class BearerToken extends CallCredentials {
  /** The header that carries the token. */
  public static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final Supplier<String> tokens;

  private BearerToken(Supplier<String> tokens) {
    this.tokens = tokens;
  }

  /** Credentials sending a fixed token. */
  public static BearerToken of(String token) {
    String checked = check(Objects.requireNonNull(token, "token"));
    return new BearerToken(() -> checked);
  }

  /** Credentials asking {@code tokens} for the current token on every call. */
  public static BearerToken of(Supplier<String> tokens) {
    return new BearerToken(Objects.requireNonNull(tokens, "tokens"));
  }

  private static String check(String token) {
    if (token == null || token.isEmpty() || !token.strip().equals(token)) {
      throw new IllegalArgumentException(
          "the bearer token must be a non-empty string without surrounding whitespace");
    }
    return token;
  }

  @Override
  public void applyRequestMetadata(
      RequestInfo requestInfo, Executor appExecutor, MetadataApplier applier) {
    appExecutor.execute(
        () -> {
          String token;
          try {
            token = check(tokens.get());
          } catch (RuntimeException e) {
            applier.fail(
                Status.UNAVAILABLE
                    .withDescription("could not get a bearer token: " + e.getMessage())
                    .withCause(e));
            return;
          }
          Metadata headers = new Metadata();
          headers.put(AUTHORIZATION, "Bearer " + token);
          applier.apply(headers);
        });
  }
}
