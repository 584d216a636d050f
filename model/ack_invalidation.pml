/*
 * Acknowledged invalidation (DESIGN.md 2.1), as a Promela model for Spin.
 *
 * One campaign, one archive, G gate processes, one archiver, the store (shared variables)
 * and an abstract clock that ticks by itself up to MAXT. A gate is three Spin processes,
 * as the implementation is several threads: two readers (the refresher and a second
 * path that installs views: a local registry's apply or a notification-triggered read;
 * together they let a slow read finish after a newer one) and a sender that holds
 * permits. A gate may die at any step (its row stays, like a SIGKILLed process's) and
 * may stall at any step: Spin explores every interleaving, including the ones where a
 * gate's processes take no step while the clock runs (SIGSTOP, a GC pause, a partition).
 *
 * What is checked (make model-check):
 *  - safety, exhaustively: no gate admits the campaign after the archive returned
 *    (assert in Sender); and a gate the archiver counted as acknowledged has no permit in
 *    flight when the archive returns (assert in Archiver): the strong promise;
 *  - with -DLIVE: no clock ticks and no deaths, so no lease can ever expire, and under
 *    weak fairness the archive still returns (ltl returns): acks alone suffice, an
 *    archive with every gate live never waits a lease.
 *
 * Broken variants (each must yield a counterexample):
 *  -DBUG_ACK_BEFORE_DRAIN      ack written while a permit on the campaign is in flight
 *  -DBUG_REGISTER_LATE         the gate registers after its first read
 *  -DBUG_LEASE_AFTER_READ      t0 taken after the read instead of before the heartbeat
 *  -DBUG_DEAD_SHORT            dead-gate threshold: heartbeat age >= L - 1, not L
 *  -DBUG_OLDER_OVER_NEWER      a read's view installed even when older than the installed
 *  -DBUG_HEARTBEAT_AFTER_READ  the heartbeat committed after the read, not before it
 * and, for the -DLIVE check (safe, since the lease fallback still holds, but slow):
 *  -DBUG_NO_ACK                gates never acknowledge: the archive can only wait leases
 */

#ifndef G
#define G 2
#endif
#define L 2            /* the lease, in clock ticks */
#ifndef MAXT
#define MAXT 3         /* the clock stops here: enough for every counterexample to show */
#endif
#ifdef BUG_DEAD_SHORT
#define DEAD_AFTER (L - 1)
#else
#define DEAD_AFTER L
#endif

byte now = 0;
byte store_seq = 0;     /* 0: running; 1: archived (the archive's sequence S = 1) */
byte tc = 0;            /* the archiver's commit time, read after its commit */
bool returned = false;  /* the archive call has returned */

/* the gates table (the store) */
bool registered[G];
byte hb[G];             /* last committed heartbeat, on the one clock */
byte acked[G];          /* cumulative acked sequence */

/* each gate's memory */
bool dead[G];
bool started[G];        /* registration done: the second reader may read */
bool have[G];           /* a view is installed */
byte cur[G];            /* its sequence */
byte deadline[G];       /* admits while now < deadline */
byte inflight[G];       /* permits in flight on the campaign */

/* Ack after apply and drain, cumulatively; folded into the step that made it possible
   (an ack written later is only slower, never less safe). */
inline try_ack(g) {
  if
#ifdef BUG_NO_ACK
  :: false -> skip
#elif defined(BUG_ACK_BEFORE_DRAIN)
  :: have[g] && cur[g] > acked[g] -> acked[g] = cur[g]
#else
  :: have[g] && cur[g] > acked[g] && inflight[g] == 0 -> acked[g] = cur[g]
#endif
  :: else -> skip
  fi
}

inline register(g) {
  atomic { !dead[g] -> registered[g] = 1; hb[g] = now; started[g] = 1 }
}

/* One refresh: t0, heartbeat commit, the read's snapshot, then install (each its own step,
   so the clock, the archiver and the other reader can move in between). */
inline refresh(g) {
#ifndef BUG_LEASE_AFTER_READ
  atomic { !dead[g] -> t0 = now };
#endif
#ifndef BUG_HEARTBEAT_AFTER_READ
  atomic { !dead[g] -> hb[g] = now };
#endif
  atomic { !dead[g] -> rs = store_seq };
#ifdef BUG_LEASE_AFTER_READ
  atomic { !dead[g] -> t0 = now };
#endif
#ifdef BUG_HEARTBEAT_AFTER_READ
  atomic { !dead[g] -> hb[g] = now };
#endif
  atomic {
    !dead[g] ->
#ifdef BUG_OLDER_OVER_NEWER
    have[g] = 1; cur[g] = rs; deadline[g] = t0 + L;
#else
    if
    :: !have[g] || rs > cur[g] || rs == cur[g] ->
       /* Newer or the same: install; the lease runs from the latest t0 of a read that
          returned this sequence or a newer one (all of them precede its commit or saw it). */
       have[g] = 1; cur[g] = rs;
       if
       :: t0 + L > deadline[g] -> deadline[g] = t0 + L
       :: else -> skip
       fi
    :: else -> skip  /* an older read finishing late: dropped, no renewal */
    fi;
#endif
    try_ack(g);
    t0 = 0; rs = 0  /* dead now: forgotten, so equal gate states merge */
  }
}

proctype Reader(byte g; bool first) {
  byte t0, rs;
  if
  :: first ->
#ifdef BUG_REGISTER_LATE
     refresh(g);
#endif
     register(g)
  :: else -> started[g]
  fi;
end:
  do
  :: refresh(g)
#ifndef LIVE
  :: first -> atomic { !dead[g] -> dead[g] = 1; inflight[g] = 0 }; break
#endif
  od;
end_dead:
  skip
}

proctype Sender(byte g) {
end:
  do
  :: atomic {
       !dead[g] && have[g] && cur[g] == 0 && now < deadline[g] && inflight[g] == 0 ->
       assert(!returned);    /* SAFETY: no admit once the archive has returned */
       inflight[g] = 1
     }
  :: atomic { !dead[g] && inflight[g] > 0 -> inflight[g] = 0; try_ack(g) }
  od
}

proctype Archiver() {
  bool seen[G];
  bool byack[G];
  byte g;
  /* The durable commit of S; the commit time is read after it returned. */
  atomic { store_seq = 1; tc = now };
  /* The gates, read in a new transaction after the commit: a gate registered after this
     read registered after the commit, so every read it installs sees S. */
  atomic { g = 0; do :: g < G -> seen[g] = registered[g]; g++ :: else -> break od };
  g = 0;
  do
  :: g < G ->
     if
     :: !seen[g] -> skip
     :: else ->
end_wait:
        if
        :: acked[g] >= 1 -> byack[g] = 1
        /* That gate's lease is certainly over: every view it holds came from a read after
           a heartbeat <= hb[g] and no later than the commit, so it ends by
           min(tc, hb[g]) + L. */
        :: now >= tc + L || now >= hb[g] + DEAD_AFTER -> skip
        fi
     fi;
     g++
  :: else -> break
  od;
  atomic {
    returned = 1;
    g = 0;
    do
    :: g < G -> assert(!byack[g] || inflight[g] == 0); g++  /* STRONG PROMISE */
    :: else -> break
    od
  }
}

#ifndef LIVE
active proctype Clock() {
end:
  do
  :: atomic { now < MAXT -> now++ }
  od
}
#endif

init {
  byte i;
  atomic {
    i = 0;
    do
    :: i < G ->
       run Reader(i, 1); run Sender(i);
#ifdef REORDER
       run Reader(i, 0);
#endif
       i++
    :: else -> break
    od;
    run Archiver()
  }
}

#ifdef LIVE
ltl returns { <> returned }
#endif
