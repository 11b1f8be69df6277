package dev.skewless.client;

import dev.skewless.v1.GetHistoricalFeaturesRequest;
import dev.skewless.v1.GetOnlineFeaturesResponse;
import dev.skewless.v1.HistoricalServiceGrpc;
import dev.skewless.v1.OnlineServiceGrpc;
import dev.skewless.v1.RegistryServiceGrpc;
import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeCallCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.arrow.memory.BufferAllocator;

/**
 * A thin client for a skewless server: online lookups and historical retrieval through the stubs
 * generated from {@code protos/}, with per-call deadlines, online results read by feature name,
 * historical results as Arrow record batches, and failures as {@link SkewlessException} (gRPC
 * status plus {@code google.rpc} details).
 *
 * <p>Thread-safe; create one per process and close it on shutdown.
 *
 * <pre>{@code
 * try (SkewlessClient client = SkewlessClient.builder("localhost:6566").usePlaintext().build()) {
 *   OnlineResult result = client.getOnlineFeatures(
 *       Selection.featureService("driver_ranking"),
 *       EntityColumn.int64s("driver_id", 1001, 1002),
 *       EntityColumn.int64s("customer_id", 2001, 2002));
 *   FeatureValue rate = result.get("conv_rate", 0);
 * }
 * }</pre>
 */
public final class SkewlessClient implements AutoCloseable {
  /** The deadline of a call made without an explicit one. */
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(5);

  private final ManagedChannel channel;
  private final Duration defaultTimeout;
  private final OnlineServiceGrpc.OnlineServiceBlockingStub online;
  private final RegistryServiceGrpc.RegistryServiceBlockingStub registry;
  private final HistoricalServiceGrpc.HistoricalServiceStub historical;

  private SkewlessClient(
      ManagedChannel channel, Duration defaultTimeout, CallCredentials callCredentials) {
    this.channel = channel;
    this.defaultTimeout = defaultTimeout;
    OnlineServiceGrpc.OnlineServiceBlockingStub online = OnlineServiceGrpc.newBlockingStub(channel);
    RegistryServiceGrpc.RegistryServiceBlockingStub registry =
        RegistryServiceGrpc.newBlockingStub(channel);
    HistoricalServiceGrpc.HistoricalServiceStub historical = HistoricalServiceGrpc.newStub(channel);
    if (callCredentials != null) {
      online = online.withCallCredentials(callCredentials);
      registry = registry.withCallCredentials(callCredentials);
      historical = historical.withCallCredentials(callCredentials);
    }
    this.online = online;
    this.registry = registry;
    this.historical = historical;
  }

  /** Starts building a client for {@code host:port}. */
  public static Builder builder(String target) {
    return new Builder(target);
  }

  /**
   * Builds a {@link SkewlessClient}; choose plaintext or TLS explicitly.
   *
   * <pre>{@code
   * SkewlessClient client = SkewlessClient.builder("features.internal:6566")
   *     .useTransportSecurity(Path.of("ca.pem"), Path.of("client.pem"), Path.of("client.key"))
   *     .bearerToken(() -> tokens.current())   // asked on every call
   *     .build();
   * }</pre>
   */
  public static final class Builder {
    private final String target;
    private ChannelCredentials credentials;
    private CallCredentials callCredentials;
    private Duration defaultTimeout = DEFAULT_TIMEOUT;

    private Builder(String target) {
      this.target = Objects.requireNonNull(target, "target");
    }

    /** Connects without TLS (local development, or a trusted sidecar network). */
    public Builder usePlaintext() {
      credentials = InsecureChannelCredentials.create();
      return this;
    }

    /** Connects over TLS, verifying the server with the JVM's trust store. */
    public Builder useTransportSecurity() {
      credentials = TlsChannelCredentials.create();
      return this;
    }

    /**
     * Connects over TLS, verifying the server with the PEM CA bundle {@code trustCertificates}.
     *
     * @throws IllegalArgumentException the file cannot be read or holds no certificate
     */
    public Builder useTransportSecurity(Path trustCertificates) {
      return useTransportSecurity(trustCertificates, null, null);
    }

    /**
     * Connects over TLS and presents a client certificate, for a server that requires mutual TLS.
     *
     * @param trustCertificates PEM CA bundle that verifies the server; null for the JVM's trust
     *     store
     * @param clientCertChain PEM certificate chain of this client
     * @param clientPrivateKey its PEM private key, in PKCS#8 ({@code BEGIN PRIVATE KEY})
     * @throws IllegalArgumentException a file cannot be read or parsed
     */
    public Builder useTransportSecurity(
        Path trustCertificates, Path clientCertChain, Path clientPrivateKey) {
      if ((clientCertChain == null) != (clientPrivateKey == null)) {
        throw new IllegalArgumentException(
            "a client certificate needs its private key, and a key its certificate");
      }
      TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder();
      try {
        if (trustCertificates != null) {
          tls.trustManager(trustCertificates.toFile());
        }
        if (clientCertChain != null) {
          tls.keyManager(clientCertChain.toFile(), clientPrivateKey.toFile());
        }
      } catch (IOException | RuntimeException e) {
        throw new IllegalArgumentException("cannot load the TLS files: " + e.getMessage(), e);
      }
      credentials = tls.build();
      return this;
    }

    /** Connects with channel credentials of your own (for example from a key store). */
    public Builder channelCredentials(ChannelCredentials credentials) {
      this.credentials = Objects.requireNonNull(credentials, "credentials");
      return this;
    }

    /** Sends {@code authorization: Bearer <token>} with every call. */
    public Builder bearerToken(String token) {
      return callCredentials(BearerToken.of(token));
    }

    /**
     * Sends {@code authorization: Bearer <token>} with every call, asking {@code tokens} for the
     * token each time, so that it can return a refreshed one before the current expires.
     */
    public Builder bearerToken(Supplier<String> tokens) {
      return callCredentials(BearerToken.of(tokens));
    }

    /**
     * Attaches call credentials to every call made by the client's stubs; given more than once
     * (or with a bearer token), all of them are applied.
     */
    public Builder callCredentials(CallCredentials credentials) {
      Objects.requireNonNull(credentials, "credentials");
      callCredentials =
          callCredentials == null
              ? credentials
              : new CompositeCallCredentials(callCredentials, credentials);
      return this;
    }

    /** The deadline of calls made without an explicit timeout. */
    public Builder defaultTimeout(Duration timeout) {
      defaultTimeout = Objects.requireNonNull(timeout, "timeout");
      return this;
    }

    /**
     * Creates the client (the connection is made lazily, on the first call).
     *
     * @throws IllegalStateException neither usePlaintext nor useTransportSecurity was called
     */
    public SkewlessClient build() {
      if (credentials == null) {
        throw new IllegalStateException("call usePlaintext() or useTransportSecurity() first");
      }
      ManagedChannel channel = Grpc.newChannelBuilder(target, credentials).build();
      return new SkewlessClient(channel, defaultTimeout, callCredentials);
    }
  }

  /** Looks up the latest feature values of entities, with the default deadline. */
  public OnlineResult getOnlineFeatures(Selection selection, EntityColumn... entities) {
    return getOnlineFeatures(defaultTimeout, selection, entities);
  }

  /**
   * Looks up the latest feature values of entities.
   *
   * @param timeout the deadline of this call
   * @param selection a feature service or explicit feature references
   * @param entities the join key columns, one value per entity row
   * @return values, statuses and event times by feature name
   * @throws SkewlessException the call failed (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, ...)
   */
  public OnlineResult getOnlineFeatures(
      Duration timeout, Selection selection, EntityColumn... entities) {
    try {
      GetOnlineFeaturesResponse response =
          online
              .withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS)
              .getOnlineFeatures(selection.toRequest(entities));
      return new OnlineResult(response);
    } catch (StatusRuntimeException e) {
      throw SkewlessException.from(e);
    }
  }

  /**
   * Retrieves point-in-time-correct features for entity rows the server reads, with the default
   * deadline for the whole stream (see {@link #getHistoricalFeatures(Duration, HistoricalRequest,
   * BufferAllocator)}).
   */
  public HistoricalReader getHistoricalFeatures(
      HistoricalRequest request, BufferAllocator allocator) {
    return getHistoricalFeatures(defaultTimeout, request, allocator);
  }

  /**
   * Retrieves point-in-time-correct features for entity rows the server reads: one output row per
   * entity row, in input order, with every input column, then the features in request order.
   * Returns once the server has sent the result's schema; read the batches from the reader and
   * close it (closing early cancels the call).
   *
   * @param timeout the deadline of the whole call, until the last batch is read
   * @param request the features and where the entity rows come from
   * @param allocator allocates the Arrow buffers of the result batches
   * @return the result as an Arrow stream
   * @throws SkewlessException the call failed (NOT_FOUND for an unknown feature, INVALID_ARGUMENT
   *     for unreadable entity rows, FAILED_PRECONDITION for a view without history, ...)
   */
  public HistoricalReader getHistoricalFeatures(
      Duration timeout, HistoricalRequest request, BufferAllocator allocator) {
    HistoricalCall call = new HistoricalCall();
    historical
        .withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS)
        .getHistoricalFeatures(call);
    call.send(GetHistoricalFeaturesRequest.newBuilder().setQuery(request.toProto()).build());
    return HistoricalReader.open(allocator, call);
  }

  /** The generated HistoricalService stub (asynchronous) with the default deadline. */
  public HistoricalServiceGrpc.HistoricalServiceStub historical() {
    return historical.withDeadlineAfter(defaultTimeout.toNanos(), TimeUnit.NANOSECONDS);
  }

  /** The generated OnlineService stub with the default deadline, for other calls. */
  public OnlineServiceGrpc.OnlineServiceBlockingStub online() {
    return online.withDeadlineAfter(defaultTimeout.toNanos(), TimeUnit.NANOSECONDS);
  }

  /** The generated RegistryService stub with the default deadline. */
  public RegistryServiceGrpc.RegistryServiceBlockingStub registry() {
    return registry.withDeadlineAfter(defaultTimeout.toNanos(), TimeUnit.NANOSECONDS);
  }

  /**
   * The underlying channel (to build other stubs on it; add the builder's call credentials with
   * {@code stub.withCallCredentials(...)}).
   */
  public ManagedChannel channel() {
    return channel;
  }

  /** Shuts the channel down, waiting up to five seconds for calls in flight. */
  @Override
  public void close() {
    channel.shutdown();
    try {
      if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
        channel.shutdownNow();
      }
    } catch (InterruptedException e) {
      channel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }
}
