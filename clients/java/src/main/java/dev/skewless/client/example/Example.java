package dev.skewless.client.example;

import dev.skewless.client.EntityColumn;
import dev.skewless.client.SkewlessClient;
import dev.skewless.client.SkewlessException;
import dev.skewless.client.Selection;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Performs the lookups of the cross-language contract test and prints their canonical JSON.
 *
 * <pre>
 * java -cp target/classes:$(cat target/classpath.txt) dev.skewless.client.example.Example \
 *     --addr 127.0.0.1:6566
 * java ... Example --addr features.internal:6566 --cacert ca.pem --cert client.pem --key client.key \
 *     --token "$TOKEN"
 * </pre>
 */
public final class Example {
  private Example() {}

  /** One question: a name, what to select, and the entity columns. */
  private record Lookup(String name, Selection selection, EntityColumn... entities) {}

  /** The questions every client asks, against the {@code examples/rides} names. */
  static List<Lookup> lookups() {
    return List.of(
        new Lookup(
            "feature_service",
            Selection.featureService("driver_ranking"),
            EntityColumn.int64s("driver_id", 1001, 1002, 1003, 9999),
            EntityColumn.int64s("customer_id", 2001, 2002, 8888, 2004)),
        new Lookup(
            "feature_list",
            Selection.features("driver_stats:conv_rate", "customer_profile:segment")
                .withFullFeatureNames(),
            EntityColumn.int64s("driver_id", 1002, 1001),
            EntityColumn.int64s("customer_id", 2002, 2001)),
        new Lookup(
            "unknown_feature",
            Selection.features("driver_stats:no_such_feature"),
            EntityColumn.int64s("driver_id", 1001)),
        new Lookup(
            "wrong_key_type",
            Selection.features("driver_stats"),
            EntityColumn.strings("driver_id", "1001")));
  }

  /**
   * Entry point.
   *
   * @param args {@code --addr host:port} (default 127.0.0.1:6566), {@code --tls}, {@code --cacert
   *     FILE}, {@code --cert FILE --key FILE} (mutual TLS), {@code --token T}, {@code --timeout-ms
   *     N}
   */
  public static void main(String[] args) {
    String addr = "127.0.0.1:6566";
    boolean tls = false;
    Path caFile = null;
    Path certFile = null;
    Path keyFile = null;
    String token = null;
    Duration timeout = Duration.ofSeconds(5);
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--addr" -> addr = args[++i];
        case "--tls" -> tls = true;
        case "--cacert" -> caFile = Path.of(args[++i]);
        case "--cert" -> certFile = Path.of(args[++i]);
        case "--key" -> keyFile = Path.of(args[++i]);
        case "--token" -> token = args[++i];
        case "--timeout-ms" -> timeout = Duration.ofMillis(Long.parseLong(args[++i]));
        default -> {
          System.err.println(
              "usage: Example [--addr host:port] [--tls] [--cacert FILE] [--cert FILE --key FILE]"
                  + " [--token T] [--timeout-ms N]");
          System.exit(2);
        }
      }
    }
    SkewlessClient.Builder builder = SkewlessClient.builder(addr).defaultTimeout(timeout);
    if (tls || caFile != null || certFile != null) {
      builder.useTransportSecurity(caFile, certFile, keyFile);
    } else {
      builder.usePlaintext();
    }
    if (token != null) {
      builder.bearerToken(token);
    }
    List<Object> answers = new ArrayList<>();
    try (SkewlessClient client = builder.build()) {
      for (Lookup lookup : lookups()) {
        Map<String, Object> entry = new LinkedHashMap<>();
        entry.put("name", lookup.name());
        try {
          entry.put(
              "results",
              CanonicalJson.results(client.getOnlineFeatures(lookup.selection(), lookup.entities())));
        } catch (SkewlessException e) {
          entry.put("error", CanonicalJson.error(e));
        }
        answers.add(entry);
      }
    }
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    out.println(CanonicalJson.write(Map.of("lookups", answers)));
  }
}
