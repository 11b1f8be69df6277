package dev.skewless.client.example;

import dev.skewless.client.HistoricalReader;
import dev.skewless.client.HistoricalRequest;
import dev.skewless.client.Selection;
import dev.skewless.client.SkewlessClient;
import dev.skewless.client.SkewlessException;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.memory.RootAllocator;

/**
 * Performs the historical retrievals of the cross-language contract test and prints their
 * canonical JSON: per question the rows of each Arrow record batch and every column's name, type
 * and values, or the error of a failed call.
 *
 * <pre>
 * java -cp target/classes:$(cat target/classpath.txt) \
 *     dev.skewless.client.example.HistoricalExample --addr 127.0.0.1:6566
 * </pre>
 */
public final class HistoricalExample {
  private HistoricalExample() {}

  /** One retrieval: a name and the request. */
  private record Question(String name, HistoricalRequest request) {}

  /**
   * The retrievals every client makes (tests/integration/historical_harness.py holds the same
   * list for Python), over the entity rows file {@code rows}.
   */
  static List<Question> questions(String rows) {
    return List.of(
        new Question(
            "feature_service",
            HistoricalRequest.fromPath(rows, Selection.featureService("driver_ranking"))
                .batchSize(4)),
        new Question(
            "feature_list",
            HistoricalRequest.fromPath(
                rows,
                Selection.features("driver_stats:conv_rate", "customer_profile:segment")
                    .withFullFeatureNames())),
        new Question(
            "unknown_feature",
            HistoricalRequest.fromPath(rows, Selection.features("driver_stats:no_such_feature"))),
        new Question(
            "missing_rows",
            HistoricalRequest.fromPath(
                "no_rows.parquet", Selection.featureService("driver_ranking"))));
  }

  /**
   * Entry point.
   *
   * @param args {@code --addr host:port} (default 127.0.0.1:6566), {@code --rows FILE} (default
   *     historical_rows.parquet), {@code --timeout-ms N}
   */
  public static void main(String[] args) throws IOException {
    String addr = "127.0.0.1:6566";
    String rows = "historical_rows.parquet";
    Duration timeout = Duration.ofSeconds(30);
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--addr" -> addr = args[++i];
        case "--rows" -> rows = args[++i];
        case "--timeout-ms" -> timeout = Duration.ofMillis(Long.parseLong(args[++i]));
        default -> {
          System.err.println(
              "usage: HistoricalExample [--addr host:port] [--rows FILE] [--timeout-ms N]");
          System.exit(2);
        }
      }
    }
    List<Object> answers = new ArrayList<>();
    try (BufferAllocator allocator = new RootAllocator();
        SkewlessClient client =
            SkewlessClient.builder(addr).usePlaintext().defaultTimeout(timeout).build()) {
      for (Question question : questions(rows)) {
        Map<String, Object> entry = new LinkedHashMap<>();
        entry.put("name", question.name());
        try (HistoricalReader reader =
            client.getHistoricalFeatures(question.request(), allocator)) {
          entry.putAll(CanonicalJson.batches(reader));
        } catch (SkewlessException e) {
          entry.put("error", CanonicalJson.error(e));
        }
        answers.add(entry);
      }
    }
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    out.println(CanonicalJson.write(Map.of("queries", answers)));
  }
}
