package ctxlockotel

import "testing"

// A provider's type can be comparable while a value of it is not (an
// interface field holding a slice): comparing two such values with ==
// panics. sameProvider must not.
func TestSameProviderIncomparableValue(t *testing.T) {
	type provider struct{ opt any }
	a, b := provider{opt: []int{1}}, provider{opt: []int{1}}
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("sameProvider panicked: %v", p)
			}
		}()
		_ = sameProvider(a, b)
	}()
	if sameProvider(provider{opt: 1}, provider{opt: 2}) {
		t.Error("different comparable providers reported the same")
	}
	if !sameProvider(provider{opt: 1}, provider{opt: 1}) {
		t.Error("equal providers reported different")
	}
}
