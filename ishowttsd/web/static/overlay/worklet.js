// ishowtts overlay player: an AudioWorklet that plays the daemon's PCM as one continuous stream.
//
// Segments (Float32Array, at the AudioContext's rate) are queued in arrival order and played back
// to back, so chunks and consecutive jobs join without a gap. A small jitter buffer: after
// running dry (at the start, or after an underrun) it waits for `prebuffer` samples, or a job's
// end, before playing again. `drop` removes a job's buffered audio at once (skip, stop, delete).
// Messages to the page: start/end of each job's audio (captions follow them), drops, underruns,
// and, with `capture`, the rendered samples (a test hook).

class IshowttsPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.prebuffer = Math.max(0, o.prebuffer | 0);
    this.volume = typeof o.volume === "number" ? o.volume : 1;
    this.staleFrames = Math.round((o.staleSeconds || 3) * sampleRate);
    this.capture = !!o.capture;
    this.segments = []; // {job, data, off, final}
    this.buffered = 0; // samples queued
    this.finals = 0; // final markers queued
    this.playing = false;
    this.job = null; // the job whose audio is being heard
    this.dry = 0; // frames rendered dry while `job` is open
    this.hold = false;
    this.frame = 0; // frames rendered since start
    this.underruns = 0; // frames rendered as silence while a job was open
    this.cap = this.capture ? new Float32Array(4096) : null;
    this.capN = 0;
    this.capStart = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(m) {
    if (m.type === "pcm") {
      this.segments.push({ job: m.job, data: m.data, off: 0, final: !!m.final });
      this.buffered += m.data.length;
      if (m.final) this.finals++;
    } else if (m.type === "drop") {
      this.drop(m.job, m.reason || "drop");
    } else if (m.type === "volume") {
      this.volume = m.value;
    } else if (m.type === "hold") {
      this.hold = !!m.on; // the daemon is paused: a line running dry is not stale
    }
  }

  drop(job, reason) {
    // job === null: everything
    const keep = [];
    let dropped = 0;
    for (const s of this.segments) {
      if (job === null || s.job === job) {
        dropped += s.data.length - s.off;
        if (s.final) this.finals--;
      } else keep.push(s);
    }
    this.segments = keep;
    this.buffered -= dropped;
    const wasPlaying = this.job !== null && (job === null || this.job === job);
    if (wasPlaying) this.endJob(this.job, reason);
    this.port.postMessage({ type: "dropped", job, reason, samples: dropped, audible: wasPlaying, frame: this.frame, wall: Date.now() });
  }

  endJob(job, reason) {
    this.job = null;
    this.dry = 0;
    this.port.postMessage({ type: "end", job, reason, frame: this.frame, wall: Date.now() });
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    let i = 0;
    if (!this.playing && (this.buffered >= this.prebuffer || this.finals > 0) && this.segments.length) {
      this.playing = true;
    }
    while (this.playing && i < n && this.segments.length) {
      const s = this.segments[0];
      if (s.job !== this.job) {
        if (this.job !== null) this.endJob(this.job, "next");
        this.job = s.job;
        this.port.postMessage({ type: "start", job: s.job, frame: this.frame + i, wall: Date.now() });
      }
      const take = Math.min(n - i, s.data.length - s.off);
      const v = this.volume;
      for (let k = 0; k < take; k++) out[i + k] = s.data[s.off + k] * v;
      i += take;
      s.off += take;
      this.buffered -= take;
      if (s.off >= s.data.length) {
        this.segments.shift();
        if (s.final) {
          this.finals--;
          this.endJob(s.job, "final");
        }
      }
    }
    if (i < n) {
      out.fill(0, i);
      this.playing = false; // ran dry: wait for the jitter buffer again
      if (this.job !== null) {
        this.underruns += n - i;
        if (!this.hold) this.dry += n - i;
        if (this.dry >= this.staleFrames) this.endJob(this.job, "stale");
      }
    } else if (this.job !== null) {
      this.dry = 0;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (this.cap) this.record(out);
    this.frame += n;
    return true;
  }

  record(out) {
    if (this.capN + out.length > this.cap.length) this.flushCapture();
    this.cap.set(out, this.capN);
    this.capN += out.length;
  }

  flushCapture() {
    if (!this.capN) return;
    const data = this.cap.slice(0, this.capN);
    this.port.postMessage({ type: "capture", start: this.capStart, data, underruns: this.underruns }, [data.buffer]);
    this.capStart += this.capN;
    this.capN = 0;
  }
}

registerProcessor("ishowtts-player", IshowttsPlayer);
