package skewless

import (
	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
)

// EntityColumn is one join key column of an online request: the i-th value belongs to
// the i-th entity row. Build it with Int64s, Int32s, Strings or Column.
type EntityColumn struct {
	// Name is the join key name (e.g. "driver_id").
	Name string
	// Values holds one key value per entity row.
	Values []*skewlessv1.Value
}

// Int64s builds an INT64 join key column.
func Int64s(name string, values ...int64) EntityColumn {
	col := EntityColumn{Name: name, Values: make([]*skewlessv1.Value, len(values))}
	for i, v := range values {
		col.Values[i] = &skewlessv1.Value{Kind: &skewlessv1.Value_Int64Value{Int64Value: v}}
	}
	return col
}

// Int32s builds an INT32 join key column.
func Int32s(name string, values ...int32) EntityColumn {
	col := EntityColumn{Name: name, Values: make([]*skewlessv1.Value, len(values))}
	for i, v := range values {
		col.Values[i] = &skewlessv1.Value{Kind: &skewlessv1.Value_Int32Value{Int32Value: v}}
	}
	return col
}

// Strings builds a STRING join key column.
func Strings(name string, values ...string) EntityColumn {
	col := EntityColumn{Name: name, Values: make([]*skewlessv1.Value, len(values))}
	for i, v := range values {
		col.Values[i] = &skewlessv1.Value{Kind: &skewlessv1.Value_StringValue{StringValue: v}}
	}
	return col
}

// Column builds a join key column from already typed values.
func Column(name string, values ...*skewlessv1.Value) EntityColumn {
	return EntityColumn{Name: name, Values: values}
}

// entityMap turns columns into the request's map; a repeated name keeps the last column.
func entityMap(columns []EntityColumn) map[string]*skewlessv1.RepeatedValue {
	m := make(map[string]*skewlessv1.RepeatedValue, len(columns))
	for _, col := range columns {
		m[col.Name] = &skewlessv1.RepeatedValue{Values: col.Values}
	}
	return m
}
