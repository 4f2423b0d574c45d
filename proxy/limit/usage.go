package limit

// Usage is a snapshot of one limit kind for metrics.
//
// For KindGlobal and KindPending, InUse is the slots held and Capacity
// the limit. For the per-key kinds (user, client IP, host), both describe
// the most saturated key: the one with the highest InUse/Capacity among
// keys that have a cap, else the busiest key (Capacity 0). With no key in
// use, InUse is 0 and Capacity the default per-key limit. So
// InUse >= Capacity > 0 means "some user/IP/host is at its cap now".
// Capacity 0 means unlimited.
type Usage struct {
	Kind     Kind
	InUse    int
	Capacity int
	// Waiting counts queued Acquires this kind is holding back; a waiter
	// short of several kinds counts under each.
	Waiting int
}

// Usage returns one entry per kind, KindGlobal through KindHost. It walks
// every key in use, so call it per scrape, not per request.
func (l *Limiter) Usage() []Usage {
	u := []Usage{{Kind: KindGlobal}, {Kind: KindUser}, {Kind: KindClientIP}, {Kind: KindHost}}
	if l == nil {
		return u
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u[KindGlobal].InUse, u[KindGlobal].Capacity = l.global, max(l.lim.Global, 0)

	perUser := mostSaturated(l.lim.PerUser)
	for name, uu := range l.users {
		perUser.add(uu.n, l.lim.userLimit(name, uu.groups))
	}
	perIP := mostSaturated(l.lim.PerIP)
	for _, n := range l.ips {
		perIP.add(n, l.lim.PerIP)
	}
	perHost := mostSaturated(l.lim.PerHost)
	for _, n := range l.hosts {
		perHost.add(n, l.lim.PerHost)
	}
	u[KindUser].InUse, u[KindUser].Capacity = perUser.result()
	u[KindClientIP].InUse, u[KindClientIP].Capacity = perIP.result()
	u[KindHost].InUse, u[KindHost].Capacity = perHost.result()

	for w := l.head; w != nil; w = w.next {
		if g := l.lim.Global; g > 0 && l.global >= g {
			u[KindGlobal].Waiting++
		}
		if n := w.k.userLimit; n > 0 && w.k.User != "" && l.users[w.k.User].n >= n {
			u[KindUser].Waiting++
		}
		if n := l.lim.PerIP; n > 0 && w.k.ClientIP.IsValid() && l.ips[w.k.ClientIP] >= n {
			u[KindClientIP].Waiting++
		}
		if n := l.lim.PerHost; n > 0 && w.k.Host != "" && l.hosts[w.k.Host] >= n {
			u[KindHost].Waiting++
		}
	}
	return u
}

// saturation picks the key closest to its cap; see Usage.
type saturation struct {
	inUse, capacity int // the best so far
	limited         bool
	busiest         int // largest usage among uncapped keys
	def             int
}

func mostSaturated(def int) saturation { return saturation{def: max(def, 0)} }

func (s *saturation) add(n, limit int) {
	if limit <= 0 {
		s.busiest = max(s.busiest, n)
		return
	}
	// n/limit > inUse/capacity, compared without division; ties go to
	// the busier key.
	if !s.limited || n*s.capacity > s.inUse*limit || (n*s.capacity == s.inUse*limit && n > s.inUse) {
		s.inUse, s.capacity, s.limited = n, limit, true
	}
}

func (s *saturation) result() (inUse, capacity int) {
	switch {
	case s.limited:
		return s.inUse, s.capacity
	case s.busiest > 0:
		return s.busiest, 0
	default:
		return 0, s.def
	}
}
