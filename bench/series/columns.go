package series

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// column is one field of a record type T, named in the file's header with its unit.
type column[T any] struct {
	name   string
	format func(*T) string
	parse  func(*T, string) error
}

// table is a file format: a comment for whoever opens the file, then one column per field.
type table[T any] struct {
	comment string
	columns []column[T]
}

func (tb table[T]) header() []string {
	var h []string
	for _, c := range tb.columns {
		h = append(h, c.name)
	}
	return h
}

func (tb table[T]) write(path string, rows []T) error {
	var out [][]string
	for i := range rows {
		var r []string
		for _, c := range tb.columns {
			r = append(r, c.format(&rows[i]))
		}
		out = append(out, r)
	}
	return writeTSV(path, tb.comment, tb.header(), out)
}

func (tb table[T]) read(path string) ([]T, error) {
	var rows []T
	err := readTSV(path, tb.header(), func(f []string) error {
		var r T
		for i, c := range tb.columns {
			if err := c.parse(&r, f[i]); err != nil {
				return fmt.Errorf("column %s: %w", c.name, err)
			}
		}
		rows = append(rows, r)
		return nil
	})
	return rows, err
}

func text[T any](name string, field func(*T) *string) column[T] {
	return column[T]{name,
		func(r *T) string { return *field(r) },
		func(r *T, s string) error {
			if s == "" {
				return errors.New("empty")
			}
			*field(r) = s
			return nil
		}}
}

func count[T any](name string, field func(*T) *int) column[T] {
	return column[T]{name,
		func(r *T) string { return strconv.Itoa(*field(r)) },
		func(r *T, s string) error {
			v, err := nonNegative(strconv.ParseInt(s, 10, 32))
			*field(r) = int(v)
			return err
		}}
}

func bytes[T any](name string, field func(*T) *int64) column[T] {
	return column[T]{name,
		func(r *T) string { return strconv.FormatInt(*field(r), 10) },
		func(r *T, s string) error {
			v, err := nonNegative(strconv.ParseInt(s, 10, 64))
			*field(r) = v
			return err
		}}
}

func decimal[T any](name string, field func(*T) *float64) column[T] {
	return column[T]{name,
		func(r *T) string { return strconv.FormatFloat(*field(r), 'f', 5, 64) },
		func(r *T, s string) error {
			v, err := nonNegative(strconv.ParseFloat(s, 64))
			*field(r) = v
			return err
		}}
}

// duration is a column of durations in unit (time.Second, time.Millisecond), written with
// microsecond precision or better.
func duration[T any](name string, unit time.Duration, field func(*T) *time.Duration) column[T] {
	digits := int(math.Round(math.Log10(float64(unit / time.Microsecond))))
	return column[T]{name,
		func(r *T) string { return strconv.FormatFloat(float64(*field(r))/float64(unit), 'f', digits, 64) },
		func(r *T, s string) error {
			v, err := nonNegative(strconv.ParseFloat(s, 64))
			*field(r) = time.Duration(math.Round(v * float64(unit)))
			return err
		}}
}

func nonNegative[N int64 | float64](v N, err error) (N, error) {
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("negative value %v", v)
	}
	return v, nil
}
