package dev.skewless.client.example;

import com.google.protobuf.Timestamp;
import dev.skewless.client.OnlineResult;
import dev.skewless.client.SkewlessException;
import dev.skewless.v1.FeatureVector;
import dev.skewless.v1.GetOnlineFeaturesResponse;
import dev.skewless.v1.Value;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.arrow.vector.BigIntVector;
import org.apache.arrow.vector.BitVector;
import org.apache.arrow.vector.FieldVector;
import org.apache.arrow.vector.Float4Vector;
import org.apache.arrow.vector.Float8Vector;
import org.apache.arrow.vector.IntVector;
import org.apache.arrow.vector.TimeStampVector;
import org.apache.arrow.vector.VarBinaryVector;
import org.apache.arrow.vector.VarCharVector;
import org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.arrow.vector.ipc.ArrowReader;
import org.apache.arrow.vector.types.FloatingPointPrecision;
import org.apache.arrow.vector.types.pojo.ArrowType;
import org.apache.arrow.vector.types.pojo.Field;

/**
 * The canonical JSON form of answers (docs/clients.md), shared by every language's example:
 * online results, the Arrow record batches of historical retrieval, and errors.
 */
public final class CanonicalJson {
  private static final DateTimeFormatter TIME =
      DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'").withZone(ZoneOffset.UTC);

  private CanonicalJson() {}

  /** Every feature vector: name, values, statuses, event times. */
  public static List<Object> results(OnlineResult result) {
    GetOnlineFeaturesResponse response = result.response();
    List<Object> out = new ArrayList<>();
    for (FeatureVector vector : response.getResultsList()) {
      Map<String, Object> entry = new LinkedHashMap<>();
      entry.put("name", vector.getName());
      List<Object> values = new ArrayList<>();
      for (Value v : vector.getValuesList()) {
        values.add(value(v));
      }
      entry.put("values", values);
      List<Object> statuses = new ArrayList<>();
      vector.getStatusesList().forEach(s -> statuses.add(s.name()));
      entry.put("statuses", statuses);
      List<Object> times = new ArrayList<>();
      vector.getEventTimesList().forEach(t -> times.add(time(t)));
      entry.put("event_times", times);
      out.add(entry);
    }
    return out;
  }

  /** A failure: status code name, ErrorInfo reason, message, BadRequest fields. */
  public static Map<String, Object> error(SkewlessException e) {
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("code", e.code().name());
    out.put("reason", e.reason());
    out.put("message", e.statusMessage());
    List<Object> fields = new ArrayList<>();
    e.fieldViolations().forEach(v -> fields.add(v.field()));
    out.put("fields", fields);
    return out;
  }

  /** RFC 3339 in UTC with six fractional digits; the unset timestamp is null. */
  public static String time(Timestamp ts) {
    if (ts.getSeconds() == 0 && ts.getNanos() == 0) {
      return null;
    }
    return TIME.format(Instant.ofEpochSecond(ts.getSeconds(), ts.getNanos()));
  }

  /** A Value as JSON: null, number, string, bool, base64 bytes, time, or a list. */
  public static Object value(Value v) {
    Base64.Encoder b64 = Base64.getEncoder();
    return switch (v.getKindCase()) {
      case KIND_NOT_SET, NULL_VALUE -> null;
      case INT32_VALUE -> (long) v.getInt32Value();
      case INT64_VALUE -> v.getInt64Value();
      case FLOAT_VALUE -> (double) v.getFloatValue();
      case DOUBLE_VALUE -> v.getDoubleValue();
      case STRING_VALUE -> v.getStringValue();
      case BYTES_VALUE -> b64.encodeToString(v.getBytesValue().toByteArray());
      case BOOL_VALUE -> v.getBoolValue();
      case TIMESTAMP_VALUE -> time(v.getTimestampValue());
      case INT32_LIST_VALUE -> new ArrayList<Object>(v.getInt32ListValue().getValuesList());
      case INT64_LIST_VALUE -> new ArrayList<Object>(v.getInt64ListValue().getValuesList());
      case FLOAT_LIST_VALUE -> {
        List<Object> out = new ArrayList<>();
        v.getFloatListValue().getValuesList().forEach(f -> out.add((double) f));
        yield out;
      }
      case DOUBLE_LIST_VALUE -> new ArrayList<Object>(v.getDoubleListValue().getValuesList());
      case STRING_LIST_VALUE -> new ArrayList<Object>(v.getStringListValue().getValuesList());
      case BYTES_LIST_VALUE -> {
        List<Object> out = new ArrayList<>();
        v.getBytesListValue().getValuesList().forEach(b -> out.add(b64.encodeToString(b.toByteArray())));
        yield out;
      }
      case BOOL_LIST_VALUE -> new ArrayList<Object>(v.getBoolListValue().getValuesList());
      case TIMESTAMP_LIST_VALUE -> {
        List<Object> out = new ArrayList<>();
        v.getTimestampListValue().getValuesList().forEach(t -> out.add(time(t)));
        yield out;
      }
    };
  }

  /**
   * A historical result, read to the end: the rows of each record batch ({@code batches}), then
   * every column with its name, canonical type and values ({@code columns}).
   */
  public static Map<String, Object> batches(ArrowReader reader) throws IOException {
    VectorSchemaRoot root = reader.getVectorSchemaRoot();
    List<Field> fields = root.getSchema().getFields();
    List<Object> sizes = new ArrayList<>();
    List<List<Object>> values = new ArrayList<>();
    fields.forEach(f -> values.add(new ArrayList<>()));
    while (reader.loadNextBatch()) {
      sizes.add((long) root.getRowCount());
      for (int c = 0; c < fields.size(); c++) {
        FieldVector vector = root.getVector(c);
        for (int i = 0; i < root.getRowCount(); i++) {
          values.get(c).add(cell(vector, i));
        }
      }
    }
    List<Object> columns = new ArrayList<>();
    for (int c = 0; c < fields.size(); c++) {
      Map<String, Object> column = new LinkedHashMap<>();
      column.put("name", fields.get(c).getName());
      column.put("type", type(fields.get(c).getType()));
      column.put("values", values.get(c));
      columns.add(column);
    }
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("batches", sizes);
    out.put("columns", columns);
    return out;
  }

  /** The canonical name of an Arrow type: int64, float32, string, timestamp[us, tz=UTC]... */
  public static String type(ArrowType type) {
    if (type instanceof ArrowType.Int i
        && i.getIsSigned()
        && (i.getBitWidth() == 32 || i.getBitWidth() == 64)) {
      return "int" + i.getBitWidth();
    }
    if (type instanceof ArrowType.FloatingPoint f) {
      if (f.getPrecision() == FloatingPointPrecision.SINGLE) {
        return "float32";
      }
      if (f.getPrecision() == FloatingPointPrecision.DOUBLE) {
        return "float64";
      }
    }
    if (type instanceof ArrowType.Utf8 || type instanceof ArrowType.LargeUtf8) {
      return "string";
    }
    if (type instanceof ArrowType.Bool) {
      return "bool";
    }
    if (type instanceof ArrowType.Binary) {
      return "binary";
    }
    if (type instanceof ArrowType.Timestamp t) {
      String unit =
          switch (t.getUnit()) {
            case SECOND -> "s";
            case MILLISECOND -> "ms";
            case MICROSECOND -> "us";
            case NANOSECOND -> "ns";
          };
      return t.getTimezone() == null
          ? "timestamp[" + unit + "]"
          : "timestamp[" + unit + ", tz=" + t.getTimezone() + "]";
    }
    return type.toString();
  }

  /** One cell as JSON: null, number (FLOAT32 widened), string, bool, base64 bytes, or time. */
  public static Object cell(FieldVector vector, int row) {
    if (vector.isNull(row)) {
      return null;
    }
    if (vector instanceof BigIntVector v) {
      return v.get(row);
    }
    if (vector instanceof IntVector v) {
      return (long) v.get(row);
    }
    if (vector instanceof Float4Vector v) {
      return (double) v.get(row);
    }
    if (vector instanceof Float8Vector v) {
      return v.get(row);
    }
    if (vector instanceof VarCharVector v) {
      return new String(v.get(row), StandardCharsets.UTF_8);
    }
    if (vector instanceof BitVector v) {
      return v.get(row) != 0;
    }
    if (vector instanceof VarBinaryVector v) {
      return Base64.getEncoder().encodeToString(v.get(row));
    }
    if (vector instanceof TimeStampVector v
        && vector.getField().getType() instanceof ArrowType.Timestamp t) {
      long value = v.get(row);
      Instant when =
          switch (t.getUnit()) {
            case SECOND -> Instant.ofEpochSecond(value);
            case MILLISECOND -> Instant.ofEpochMilli(value);
            case MICROSECOND ->
                Instant.ofEpochSecond(
                    Math.floorDiv(value, 1_000_000L), Math.floorMod(value, 1_000_000L) * 1_000L);
            case NANOSECOND ->
                Instant.ofEpochSecond(
                    Math.floorDiv(value, 1_000_000_000L), Math.floorMod(value, 1_000_000_000L));
          };
      return TIME.format(when);
    }
    return String.valueOf(vector.getObject(row));
  }

  /** Serializes maps, lists, strings, numbers, booleans and null as compact JSON. */
  public static String write(Object value) {
    StringBuilder out = new StringBuilder();
    write(value, out);
    return out.toString();
  }

  private static void write(Object value, StringBuilder out) {
    if (value == null) {
      out.append("null");
    } else if (value instanceof String s) {
      string(s, out);
    } else if (value instanceof Boolean || value instanceof Long || value instanceof Integer) {
      out.append(value);
    } else if (value instanceof Double d) {
      if (d.isNaN() || d.isInfinite()) {
        string(d.toString(), out); // JSON has no NaN/Infinity; proto3 JSON uses these strings
      } else if (d == Math.rint(d) && Math.abs(d) < 1e15) {
        out.append(d.longValue()).append(".0");
      } else {
        out.append(d);
      }
    } else if (value instanceof Map<?, ?> map) {
      out.append('{');
      boolean first = true;
      for (Map.Entry<?, ?> e : map.entrySet()) {
        if (!first) {
          out.append(',');
        }
        first = false;
        string(String.valueOf(e.getKey()), out);
        out.append(':');
        write(e.getValue(), out);
      }
      out.append('}');
    } else if (value instanceof List<?> list) {
      out.append('[');
      for (int i = 0; i < list.size(); i++) {
        if (i > 0) {
          out.append(',');
        }
        write(list.get(i), out);
      }
      out.append(']');
    } else {
      throw new IllegalArgumentException("cannot write " + value.getClass());
    }
  }

  private static void string(String s, StringBuilder out) {
    out.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        case '\r' -> out.append("\\r");
        case '\t' -> out.append("\\t");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    out.append('"');
  }
}
