// How a metrics window's (bdSeq, seq) moves a device's gap count, for both fleet stores.
//
// seq counts up within a session (bdSeq) without wrapping; devices from before that wrapped it at
// 256. A step back therefore means one of two things. A long way back (from the top of the byte
// range to its bottom) is such a wrap: the numbers skipped over it are missing. A short way back
// is a late arrival: several collectors in one shared-subscription group each commit their share
// of a device's windows, so a later window can be stored first. A late arrival is no new gap (it
// was counted as missing when its successor passed it, and counters never go down) and must not
// move the device's position back, or every window after it would read as a wrap.

/** A step back longer than this is a 256 wrap; a shorter one is a late arrival. */
export const WRAP_DISTANCE = 128;

/** Where a device's windows have reached in its current session (null seq: none yet). */
export interface SeqPosition {
  bdSeq: number | null;
  seq: number | null;
}

/**
 * The seq numbers missing before this window, and whether the device's position moves to it.
 *
 * @example
 * ```ts
 * import { seqStep } from 'edgeexit/fleet';
 * seqStep({ bdSeq: 1, seq: 4 }, { bdSeq: 1, seq: 7 }); // { gap: 2, advance: true }
 * seqStep({ bdSeq: 1, seq: 7 }, { bdSeq: 1, seq: 6 }); // { gap: 0, advance: false }: a late arrival
 * ```
 */
export function seqStep(at: SeqPosition, w: { bdSeq: number; seq: number }): { gap: number; advance: boolean } {
  if (at.bdSeq !== w.bdSeq || at.seq === null) return { gap: 0, advance: true };
  if (w.seq === at.seq) return { gap: 0, advance: false }; // a broker redelivery
  if (w.seq > at.seq) return { gap: w.seq - at.seq - 1, advance: true };
  if (at.seq - w.seq > WRAP_DISTANCE) return { gap: (w.seq - at.seq - 1 + 256) % 256, advance: true };
  return { gap: 0, advance: false };
}
