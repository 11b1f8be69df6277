package dev.skewless.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.skewless.v1.GetOnlineFeaturesRequest;
import dev.skewless.v1.GetOnlineFeaturesResponse;
import dev.skewless.v1.OnlineServiceGrpc;
import io.grpc.CallCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Bearer tokens and call credentials, checked at a small gRPC server on loopback that records the
 * authorization header of every call.
 */
class CallCredentialsTest {
  private final List<String> headers = Collections.synchronizedList(new ArrayList<>());
  private Server server;

  @BeforeEach
  void startServer() throws Exception {
    OnlineServiceGrpc.OnlineServiceImplBase online =
        new OnlineServiceGrpc.OnlineServiceImplBase() {
          @Override
          public void getOnlineFeatures(
              GetOnlineFeaturesRequest request,
              StreamObserver<GetOnlineFeaturesResponse> responses) {
            responses.onNext(GetOnlineFeaturesResponse.getDefaultInstance());
            responses.onCompleted();
          }
        };
    ServerInterceptor recorder =
        new ServerInterceptor() {
          @Override
          public <Q, R> ServerCall.Listener<Q> interceptCall(
              ServerCall<Q, R> call, Metadata metadata, ServerCallHandler<Q, R> next) {
            headers.add(String.valueOf(metadata.get(BearerToken.AUTHORIZATION)));
            return next.startCall(call, metadata);
          }
        };
    server =
        Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
            .addService(ServerInterceptors.intercept(online, recorder))
            .build()
            .start();
  }

  @AfterEach
  void stopServer() throws Exception {
    server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
  }

  private SkewlessClient.Builder client() {
    return SkewlessClient.builder("127.0.0.1:" + server.getPort()).usePlaintext();
  }

  private static void lookUp(SkewlessClient client) {
    client.getOnlineFeatures(Selection.features("v:f"), EntityColumn.int64s("k", 1));
  }

  @Test
  void bearerTokenIsSentWithEveryCall() {
    try (SkewlessClient client = client().bearerToken("static-token").build()) {
      lookUp(client);
      lookUp(client);
    }
    try (SkewlessClient client = client().build()) {
      lookUp(client);
    }
    assertEquals(List.of("Bearer static-token", "Bearer static-token", "null"), headers);
  }

  @Test
  void tokenSupplierIsAskedForEveryCall() {
    AtomicInteger n = new AtomicInteger();
    try (SkewlessClient client =
        client().bearerToken(() -> "token-" + n.incrementAndGet()).build()) {
      lookUp(client);
      lookUp(client);
      lookUp(client);
    }
    assertEquals(List.of("Bearer token-1", "Bearer token-2", "Bearer token-3"), headers);
  }

  @Test
  void failingSupplierFailsTheCallUnavailable() {
    try (SkewlessClient client =
        client()
            .bearerToken(
                () -> {
                  throw new IllegalStateException("token service down");
                })
            .build()) {
      SkewlessException e = assertThrows(SkewlessException.class, () -> lookUp(client));
      assertEquals(Status.Code.UNAVAILABLE, e.code());
    }
    assertEquals(List.of(), headers); // nothing reached the server
  }

  @Test
  void callCredentialsOfYourOwnAreApplied() {
    CallCredentials custom =
        new CallCredentials() {
          @Override
          public void applyRequestMetadata(
              RequestInfo info, Executor executor, MetadataApplier applier) {
            Metadata extra = new Metadata();
            extra.put(BearerToken.AUTHORIZATION, "Bearer from-call-credentials");
            applier.apply(extra);
          }
        };
    try (SkewlessClient client = client().callCredentials(custom).build()) {
      lookUp(client);
    }
    assertEquals(List.of("Bearer from-call-credentials"), headers);
  }

  @Test
  void unusableTlsFilesAreRefusedAtBuild() {
    Path missing = Path.of("no-such-ca.pem");
    assertThrows(
        IllegalArgumentException.class,
        () -> SkewlessClient.builder("127.0.0.1:1").useTransportSecurity(missing));
    assertThrows(
        IllegalArgumentException.class,
        () -> SkewlessClient.builder("127.0.0.1:1").useTransportSecurity(null, missing, null));
  }
}
