package skewless

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"

	skewlessv1 "github.com/skewless/skewless/clients/go/gen/skewless/v1"
)

// HistoricalQuery says which features GetHistoricalFeatures joins and where the server
// reads the entity rows (join keys, a label time column, any other columns) from.
type HistoricalQuery struct {
	// Selection picks the features: FeatureService(name), or Features(refs...),
	// optionally WithFullFeatureNames for "view__feature" column names.
	Selection Selection
	// Path is a Parquet or CSV file path or glob of entity rows that the server reads
	// (relative paths are relative to its repository). Set Path or SQL.
	Path string
	// SQL is a DuckDB SELECT over registered data sources producing the entity rows.
	SQL string
	// LabelTimeColumn holds each row's label time; "event_timestamp" when empty.
	LabelTimeColumn string
	// BatchSize is the number of rows per returned record batch; 0 lets the server choose.
	BatchSize int32
	// Compression of the record batch buffers on the wire (LZ4_FRAME or ZSTD save
	// bandwidth); the reader decompresses them. UNSPECIFIED means none.
	Compression skewlessv1.ArrowCompression
}

// Proto builds the generated query message, or an error when neither or both of Path
// and SQL are set.
func (q HistoricalQuery) Proto() (*skewlessv1.HistoricalQuery, error) {
	msg := &skewlessv1.HistoricalQuery{
		LabelTimeColumn:  q.LabelTimeColumn,
		FullFeatureNames: q.Selection.fullFeatureNames,
		Compression:      q.Compression,
		BatchSize:        q.BatchSize,
	}
	if q.Selection.service != "" {
		msg.Kind = &skewlessv1.HistoricalQuery_FeatureService{FeatureService: q.Selection.service}
	} else {
		msg.Kind = &skewlessv1.HistoricalQuery_Features{
			Features: &skewlessv1.FeatureList{Features: q.Selection.features},
		}
	}
	switch {
	case (q.Path == "") == (q.SQL == ""):
		return nil, errors.New("skewless: a HistoricalQuery needs exactly one of Path or SQL")
	case q.Path != "":
		msg.EntityRows = &skewlessv1.HistoricalQuery_Path{Path: q.Path}
	default:
		msg.EntityRows = &skewlessv1.HistoricalQuery_Sql{Sql: q.SQL}
	}
	return msg, nil
}

// HistoricalBatches starts a point-in-time join and returns its result as a stream of
// Arrow record batches: one output row per entity row, in input order, with every
// input column, then the features in request order. It returns once the server has
// sent the result's schema; an invalid query fails here with an *Error (NOT_FOUND for
// an unknown feature, INVALID_ARGUMENT for unreadable entity rows, ...).
//
// The whole stream ends at ctx's deadline (or after the client's default timeout when
// ctx has none: give large retrievals a context with their own deadline). Close the
// reader when done; closing it early cancels the call on the server.
func (c *Client) HistoricalBatches(ctx context.Context, q HistoricalQuery) (*HistoricalReader, error) {
	query, err := q.Proto()
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.withDeadline(ctx)
	r, err := openHistorical(ctx, c.Historical, query)
	if err != nil {
		cancel()
		return nil, err
	}
	r.cancel = cancel
	return r, nil
}

// HistoricalFeatures runs a point-in-time join and reads its whole result (see
// HistoricalBatches). Release the result when done with it.
func (c *Client) HistoricalFeatures(ctx context.Context, q HistoricalQuery) (*HistoricalResult, error) {
	r, err := c.HistoricalBatches(ctx, q)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res := &HistoricalResult{Schema: r.Schema()}
	for r.Next() {
		batch := r.RecordBatch()
		batch.Retain()
		res.Batches = append(res.Batches, batch)
	}
	if err := r.Err(); err != nil {
		res.Release()
		return nil, err
	}
	return res, nil
}

// HistoricalResult is the whole result of a historical retrieval.
type HistoricalResult struct {
	// Schema is the result's schema: the entity row columns, then the features.
	Schema *arrow.Schema
	// Batches are the record batches in the order received (their rows in input order).
	Batches []arrow.RecordBatch
}

// NumRows returns the number of result rows (the number of entity rows).
func (r *HistoricalResult) NumRows() int64 {
	var n int64
	for _, b := range r.Batches {
		n += b.NumRows()
	}
	return n
}

// Table returns the batches as one arrow.Table; Release it when done.
func (r *HistoricalResult) Table() arrow.Table {
	return array.NewTableFromRecords(r.Schema, r.Batches)
}

// Release releases the batches.
func (r *HistoricalResult) Release() {
	for _, b := range r.Batches {
		b.Release()
	}
	r.Batches = nil
}

// HistoricalReader reads the record batches of one GetHistoricalFeatures call:
//
//	for r.Next() { batch := r.RecordBatch(); ... }
//	if err := r.Err(); err != nil { ... }
//	r.Close()
type HistoricalReader struct {
	source *responseMessages
	reader *ipc.Reader
	cancel context.CancelFunc
	err    error
	rows   int64
	done   bool
}

type historicalStream = grpc.BidiStreamingClient[skewlessv1.GetHistoricalFeaturesRequest, skewlessv1.GetHistoricalFeaturesResponse]

func openHistorical(ctx context.Context, stub skewlessv1.HistoricalServiceClient, query *skewlessv1.HistoricalQuery) (*HistoricalReader, error) {
	stream, err := stub.GetHistoricalFeatures(ctx)
	if err != nil {
		return nil, FromError(err)
	}
	// io.EOF from Send means the server already ended the call: Recv returns its status.
	if err := stream.Send(&skewlessv1.GetHistoricalFeaturesRequest{Query: query}); err != nil && !errors.Is(err, io.EOF) {
		return nil, FromError(err)
	}
	if err := stream.CloseSend(); err != nil {
		return nil, FromError(err)
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("skewless: the server ended GetHistoricalFeatures without a schema")
	}
	if err != nil {
		return nil, FromError(err)
	}
	if first.GetArrowSchema() == nil || first.GetArrowRecordBatch() != nil {
		return nil, errors.New("skewless: the first GetHistoricalFeatures response carries no Arrow schema")
	}
	source := &responseMessages{stream: stream, pending: first.GetArrowSchema().GetSerializedSchema()}
	source.refs.Add(1)
	reader, err := ipc.NewReaderFromMessageReader(source)
	if err != nil {
		return nil, fmt.Errorf("skewless: reading the result's Arrow schema: %w", err)
	}
	return &HistoricalReader{source: source, reader: reader}, nil
}

// Schema returns the result's schema: the entity row columns, then the features.
func (r *HistoricalReader) Schema() *arrow.Schema { return r.reader.Schema() }

// Next reads the next record batch; false at the end of the result or on an error (see Err).
func (r *HistoricalReader) Next() bool {
	if r.done {
		return false
	}
	if !r.reader.Next() {
		r.finish(r.source.err)
		if r.err == nil {
			r.err = r.reader.Err()
		}
		return false
	}
	batch := r.reader.RecordBatch()
	if batch.NumRows() != r.source.rowCount {
		r.finish(fmt.Errorf("skewless: a record batch holds %d rows but its response says row_count=%d",
			batch.NumRows(), r.source.rowCount))
		return false
	}
	r.rows += batch.NumRows()
	return true
}

// RecordBatch returns the current batch; it is valid until the next call to Next or
// Close (Retain it to keep it longer).
func (r *HistoricalReader) RecordBatch() arrow.RecordBatch { return r.reader.RecordBatch() }

// Rows returns the number of rows read so far.
func (r *HistoricalReader) Rows() int64 { return r.rows }

// Err returns the error that ended the stream early: an *Error for a failed call.
func (r *HistoricalReader) Err() error { return r.err }

// Close cancels the call if the result was not read to the end and releases the reader.
func (r *HistoricalReader) Close() error {
	r.finish(nil)
	if r.reader != nil {
		r.reader.Release()
		r.reader = nil
	}
	return nil
}

func (r *HistoricalReader) finish(err error) {
	if r.err == nil {
		r.err = err
	}
	r.done = true
	if r.cancel != nil {
		r.cancel()
		r.cancel = nil
	}
}

// responseMessages hands the Arrow IPC messages of a GetHistoricalFeatures response
// stream to an ipc.Reader: first the schema of the first response, then the record
// batch of each later response, read with the generated message types.
type responseMessages struct {
	stream   historicalStream
	pending  []byte            // the schema message, until it has been handed out
	current  ipc.MessageReader // owns the message handed out last
	rowCount int64             // row_count of the response handed out last
	err      error             // the call's failure, kept unwrapped for Err
	refs     atomic.Int64
}

// Message returns the next IPC message, io.EOF at the end of the stream.
func (m *responseMessages) Message() (*ipc.Message, error) {
	data := m.pending
	if data != nil {
		m.pending = nil
	} else {
		resp, err := m.stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if err != nil {
			m.err = FromError(err)
			return nil, m.err
		}
		batch := resp.GetArrowRecordBatch()
		if batch == nil || resp.GetArrowSchema() != nil {
			m.err = errors.New("skewless: a GetHistoricalFeatures response after the first carries no record batch alone")
			return nil, m.err
		}
		data, m.rowCount = batch.GetSerializedRecordBatch(), batch.GetRowCount()
	}
	m.releaseCurrent()
	m.current = ipc.NewMessageReader(bytes.NewReader(data), ipc.WithAllocator(memory.DefaultAllocator))
	msg, err := m.current.Message()
	if err != nil {
		m.err = fmt.Errorf("skewless: reading an Arrow IPC message: %w", err)
		return nil, m.err
	}
	return msg, nil
}

func (m *responseMessages) releaseCurrent() {
	if m.current != nil {
		m.current.Release()
		m.current = nil
	}
}

// Retain implements ipc.MessageReader.
func (m *responseMessages) Retain() { m.refs.Add(1) }

// Release implements ipc.MessageReader.
func (m *responseMessages) Release() {
	if m.refs.Add(-1) == 0 {
		m.releaseCurrent()
	}
}
