package main

import "fmt"

// Mean returns the arithmetic mean of a non-empty slice.
func Mean(values []float64) float64 {
	panic("TODO")
}

// Reverse returns s with its runes in reverse order.
func Reverse(s string) string {
	runes := []rune(s)
	<|fill|>
	return string(runes)
}

func main() {
	fmt.Println(Mean([]float64{1, 2, 3}), Reverse("hello"))
}
