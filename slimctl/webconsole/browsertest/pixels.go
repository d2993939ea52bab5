package browsertest

import (
	"fmt"
	"image"
)

// Blank reports whether every pixel of img has the same colour.
func Blank(img image.Image) bool {
	r := img.Bounds()
	if r.Empty() {
		return true
	}
	first := img.At(r.Min.X, r.Min.Y)
	fr, fg, fb, _ := first.RGBA()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if cr != fr || cg != fg || cb != fb {
				return false
			}
		}
	}
	return true
}

// Match compares two images of the same size pixel by pixel and returns the fraction of pixels
// whose red, green and blue each differ by at most tolerance (on 0..255). Alpha is ignored.
func Match(a, b image.Image, tolerance uint8) (float64, error) {
	ra, rb := a.Bounds(), b.Bounds()
	if ra.Dx() != rb.Dx() || ra.Dy() != rb.Dy() {
		return 0, fmt.Errorf("sizes differ: %dx%d and %dx%d", ra.Dx(), ra.Dy(), rb.Dx(), rb.Dy())
	}
	if ra.Empty() {
		return 1, nil
	}
	same := 0
	for y := range ra.Dy() {
		for x := range ra.Dx() {
			if near(a.At(ra.Min.X+x, ra.Min.Y+y).RGBA, b.At(rb.Min.X+x, rb.Min.Y+y).RGBA, tolerance) {
				same++
			}
		}
	}
	return float64(same) / float64(ra.Dx()*ra.Dy()), nil
}

func near(ca, cb func() (r, g, b, a uint32), tolerance uint8) bool {
	ar, ag, ab, _ := ca()
	br, bg, bb, _ := cb()
	for _, d := range [][2]uint32{{ar, br}, {ag, bg}, {ab, bb}} {
		x, y := int(d[0]>>8), int(d[1]>>8)
		if x-y > int(tolerance) || y-x > int(tolerance) {
			return false
		}
	}
	return true
}
