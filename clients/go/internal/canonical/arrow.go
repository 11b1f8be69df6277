package canonical

import (
	"encoding/base64"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// Batches renders a historical result: the rows of each record batch, then every
// column with its name, canonical type and values (all batches, in order).
func Batches(schema *arrow.Schema, batches []arrow.RecordBatch) map[string]any {
	sizes := make([]int64, len(batches))
	for i, b := range batches {
		sizes[i] = b.NumRows()
	}
	columns := make([]map[string]any, schema.NumFields())
	for c, field := range schema.Fields() {
		values := []any{}
		for _, b := range batches {
			col := b.Column(c)
			for i := 0; i < col.Len(); i++ {
				values = append(values, Cell(col, i))
			}
		}
		columns[c] = map[string]any{"name": field.Name, "type": Type(field.Type), "values": values}
	}
	return map[string]any{"batches": sizes, "columns": columns}
}

// Type is the canonical name of an Arrow type: int64, float32, string, bool,
// timestamp[us, tz=UTC], ...
func Type(t arrow.DataType) string {
	if ts, ok := t.(*arrow.TimestampType); ok {
		if ts.TimeZone == "" {
			return fmt.Sprintf("timestamp[%s]", ts.Unit)
		}
		return fmt.Sprintf("timestamp[%s, tz=%s]", ts.Unit, ts.TimeZone)
	}
	switch t.ID() {
	case arrow.INT32:
		return "int32"
	case arrow.INT64:
		return "int64"
	case arrow.FLOAT32:
		return "float32"
	case arrow.FLOAT64:
		return "float64"
	case arrow.STRING, arrow.LARGE_STRING:
		return "string"
	case arrow.BOOL:
		return "bool"
	case arrow.BINARY:
		return "binary"
	}
	return t.String()
}

// Cell renders one value as JSON: null, number (FLOAT32 widened to a double), string,
// bool, base64 bytes, or a canonical time.
func Cell(col arrow.Array, i int) any {
	if col.IsNull(i) {
		return nil
	}
	switch a := col.(type) {
	case *array.Int32:
		return a.Value(i)
	case *array.Int64:
		return a.Value(i)
	case *array.Float32:
		return float64(a.Value(i))
	case *array.Float64:
		return a.Value(i)
	case *array.String:
		return a.Value(i)
	case *array.LargeString:
		return a.Value(i)
	case *array.Boolean:
		return a.Value(i)
	case *array.Binary:
		return base64.StdEncoding.EncodeToString(a.Value(i))
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		return a.Value(i).ToTime(unit).UTC().Format(timeLayout) + "Z"
	}
	return col.ValueStr(i)
}
