package dev.skewless.client;

import dev.skewless.v1.GetHistoricalFeaturesRequest;
import dev.skewless.v1.GetOnlineFeaturesResponse;
import dev.skewless.v1.HistoricalServiceGrpc;
import dev.skewless.v1.OnlineServiceGrpc;
import dev.skewless.v1.RegistryServiceGrpc;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
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

  private SkewlessClient(ManagedChannel channel, Duration defaultTimeout) {
    this.channel = channel;
    this.defaultTimeout = defaultTimeout;
    this.online = OnlineServiceGrpc.newBlockingStub(channel);
    this.registry = RegistryServiceGrpc.newBlockingStub(channel);
    this.historical = HistoricalServiceGrpc.newStub(channel);
  }

  /** Starts building a client for {@code host:port}. */
  public static Builder builder(String target) {
    return new Builder(target);
  }

  /** Builds a {@link SkewlessClient}; choose plaintext or TLS explicitly. */
  public static final class Builder {
    private final String target;
    private Boolean plaintext;
    private Duration defaultTimeout = DEFAULT_TIMEOUT;

    private Builder(String target) {
      this.target = Objects.requireNonNull(target, "target");
    }

    /** Connects without TLS (local development, or a trusted sidecar network). */
    public Builder usePlaintext() {
      plaintext = true;
      return this;
    }

    /** Connects over TLS, verifying the server with the JVM's trust store. */
    public Builder useTransportSecurity() {
      plaintext = false;
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
      if (plaintext == null) {
        throw new IllegalStateException("call usePlaintext() or useTransportSecurity() first");
      }
      ManagedChannelBuilder<?> builder = ManagedChannelBuilder.forTarget(target);
      if (plaintext) {
        builder.usePlaintext();
      } else {
        builder.useTransportSecurity();
      }
      return new SkewlessClient(builder.build(), defaultTimeout);
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

  /** The underlying channel (to build other stubs on it). */
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
