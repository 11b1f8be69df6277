package dev.skewless.client;

import dev.skewless.v1.GetHistoricalFeaturesRequest;
import dev.skewless.v1.GetHistoricalFeaturesResponse;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;

/**
 * The response side of one {@code GetHistoricalFeatures} call, read one message at a time: the
 * next response is requested from the server only when the previous one has been taken, so a
 * slow reader holds the server back instead of buffering the whole result.
 */
final class HistoricalCall
    implements ClientResponseObserver<GetHistoricalFeaturesRequest, GetHistoricalFeaturesResponse> {
  private static final Object END = new Object();

  private final BlockingQueue<Object> queue = new LinkedBlockingQueue<>();
  private ClientCallStreamObserver<GetHistoricalFeaturesRequest> call;
  private boolean finished;

  @Override
  public void beforeStart(ClientCallStreamObserver<GetHistoricalFeaturesRequest> requestStream) {
    call = requestStream;
    requestStream.disableAutoRequestWithInitial(1);
  }

  @Override
  public void onNext(GetHistoricalFeaturesResponse response) {
    queue.add(response);
  }

  @Override
  public void onError(Throwable error) {
    queue.add(error);
  }

  @Override
  public void onCompleted() {
    queue.add(END);
  }

  /** Sends the one request (the query) and half-closes. */
  void send(GetHistoricalFeaturesRequest request) {
    call.onNext(request);
    call.onCompleted();
  }

  /**
   * Waits for the next response.
   *
   * @return the response, or null at the end of the stream
   * @throws SkewlessException the call failed
   */
  GetHistoricalFeaturesResponse next() {
    if (finished) {
      return null;
    }
    Object item;
    try {
      item = queue.take();
    } catch (InterruptedException e) {
      cancel();
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted while waiting for the server", e);
    }
    if (item instanceof GetHistoricalFeaturesResponse response) {
      call.request(1);
      return response;
    }
    finished = true;
    if (item == END) {
      return null;
    }
    if (item instanceof StatusRuntimeException e) {
      throw SkewlessException.from(e);
    }
    throw SkewlessException.from(Status.fromThrowable((Throwable) item).asRuntimeException());
  }

  /** Cancels the call unless it has ended (the server stops its query). */
  void cancel() {
    if (!finished) {
      finished = true;
      call.cancel("the client closed the historical result", null);
    }
  }
}
