package balancer

import (
	"math"
	"net"
)

// clientKey hashes the client's IP address (not its port, so every
// connection of a client maps alike) with FNV-1a, without allocating.
func clientKey(addr net.Addr) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	if ta, ok := addr.(*net.TCPAddr); ok {
		ip := ta.IP
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		for _, c := range ip {
			h ^= uint64(c)
			h *= prime
		}
	}
	return h
}

// mix64 is splitmix64's finaliser: it spreads every input bit over the
// output, so client and backend hashes combine into independent scores.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hrwScore is the weighted rendezvous score of a backend for a client:
// -weight/ln(u), u uniform in (0,1) from the combined hash. For equal
// weights the order is the order of u; a backend of twice the weight wins
// twice as many clients.
func hrwScore(key, seed uint64, weight int64) float64 {
	h := mix64(key ^ mix64(seed))
	u := (float64(h>>11) + 0.5) / (1 << 53) // never 0 nor 1
	return -float64(weight) / math.Log(u)
}
