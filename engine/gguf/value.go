package gguf

import (
	"fmt"
	"math"
)

// ValueType is the type tag of a metadata value.
type ValueType uint32

// The metadata value types of GGUF v2 and v3.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("valuetype(%d)", uint32(t))
}

// scalarSize is the encoded size of a fixed-size scalar, or 0 for strings
// and arrays.
func (t ValueType) scalarSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// Value is one metadata value. Scalars hold the matching Go type (uint8,
// int8, uint16, int16, uint32, int32, float32, bool, string, uint64, int64,
// float64); arrays hold an Array.
type Value struct {
	Type ValueType
	V    any
}

// Array is an array value. Values is a typed slice matching Elem: []uint8,
// []int8, []uint16, []int16, []uint32, []int32, []float32, []bool,
// []string, []uint64, []int64, []float64, or []Array for nested arrays.
type Array struct {
	Elem   ValueType
	Values any
}

// Len is the number of elements.
func (a Array) Len() int {
	switch v := a.Values.(type) {
	case []uint8:
		return len(v)
	case []int8:
		return len(v)
	case []uint16:
		return len(v)
	case []int16:
		return len(v)
	case []uint32:
		return len(v)
	case []int32:
		return len(v)
	case []float32:
		return len(v)
	case []bool:
		return len(v)
	case []string:
		return len(v)
	case []uint64:
		return len(v)
	case []int64:
		return len(v)
	case []float64:
		return len(v)
	case []Array:
		return len(v)
	}
	return 0
}

// Constructors for the values a writer sets.

func String(s string) Value    { return Value{TypeString, s} }
func Uint32(v uint32) Value    { return Value{TypeUint32, v} }
func Int32(v int32) Value      { return Value{TypeInt32, v} }
func Uint64(v uint64) Value    { return Value{TypeUint64, v} }
func Float32(v float32) Value  { return Value{TypeFloat32, v} }
func Bool(v bool) Value        { return Value{TypeBool, v} }
func Strings(v []string) Value { return Value{TypeArray, Array{TypeString, v}} }
func Float32s(v []float32) Value {
	return Value{TypeArray, Array{TypeFloat32, v}}
}
func Int32s(v []int32) Value { return Value{TypeArray, Array{TypeInt32, v}} }

// Int returns an integer-typed value as int64; ok is false for other types
// and for uint64 values beyond int64.
func (v Value) Int() (int64, bool) {
	switch x := v.V.(type) {
	case uint8:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

// Float returns a float- or integer-typed value as float64.
func (v Value) Float() (float64, bool) {
	switch x := v.V.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	if i, ok := v.Int(); ok {
		return float64(i), true
	}
	return 0, false
}

// String formats the value for display; long arrays are elided.
func (v Value) String() string {
	switch x := v.V.(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case Array:
		n := x.Len()
		if n > 8 {
			return fmt.Sprintf("[%s x %d]", x.Elem, n)
		}
		return fmt.Sprintf("%v", x.Values)
	}
	return fmt.Sprint(v.V)
}
