package dev.skewless.client;

import dev.skewless.v1.Value;
import java.util.ArrayList;
import java.util.List;

/**
 * One join key column of an online request: the i-th value belongs to the i-th entity row.
 *
 * <pre>{@code
 * EntityColumn.int64s("driver_id", 1001, 1002)
 * }</pre>
 *
 * @param name the join key name, e.g. {@code driver_id}
 * @param values one key value per entity row
 */
public record EntityColumn(String name, List<Value> values) {

  /** Copies the values so that the column is immutable. */
  public EntityColumn {
    values = List.copyOf(values);
  }

  /** An INT64 join key column. */
  public static EntityColumn int64s(String name, long... values) {
    List<Value> out = new ArrayList<>(values.length);
    for (long v : values) {
      out.add(Value.newBuilder().setInt64Value(v).build());
    }
    return new EntityColumn(name, out);
  }

  /** An INT32 join key column. */
  public static EntityColumn int32s(String name, int... values) {
    List<Value> out = new ArrayList<>(values.length);
    for (int v : values) {
      out.add(Value.newBuilder().setInt32Value(v).build());
    }
    return new EntityColumn(name, out);
  }

  /** A STRING join key column. */
  public static EntityColumn strings(String name, String... values) {
    List<Value> out = new ArrayList<>(values.length);
    for (String v : values) {
      out.add(Value.newBuilder().setStringValue(v).build());
    }
    return new EntityColumn(name, out);
  }

  /** A join key column of already typed values. */
  public static EntityColumn of(String name, Value... values) {
    return new EntityColumn(name, List.of(values));
  }
}
