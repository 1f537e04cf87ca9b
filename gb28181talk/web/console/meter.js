// A level meter on a Web Audio AnalyserNode: the level (dBFS) and the dominant frequency
// (Hz) of a MediaStream, shown as a bar and written to the element's data-level and
// data-frequency (which the browser test reads).

const FLOOR_DB = -100;
const SILENT_DB = -70;

export class Meter {
  constructor(element, context) {
    this.element = element;
    this.context = context;
    this.fill = element.querySelector(".fill");
    this.figure = element.querySelector(".figure");
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 8192; // 5.9 Hz per bin at 48 kHz
    this.analyser.smoothingTimeConstant = 0.3;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.spectrum = new Float32Array(this.analyser.frequencyBinCount);
    this.source = null;
  }

  attach(stream) {
    this.detach();
    this.source = this.context.createMediaStreamSource(stream);
    this.source.connect(this.analyser);
  }

  detach() {
    if (this.source) {
      this.source.disconnect();
      this.source = null;
    }
    this.show(FLOOR_DB, 0);
  }

  /** Read the analyser once and show what it hears. */
  tick() {
    if (!this.source) {
      return;
    }
    this.analyser.getFloatTimeDomainData(this.samples);
    let power = 0;
    for (const value of this.samples) {
      power += value * value;
    }
    const rms = Math.sqrt(power / this.samples.length);
    const level = rms > 0 ? Math.max(FLOOR_DB, 20 * Math.log10(rms)) : FLOOR_DB;
    this.show(level, level > SILENT_DB ? this.dominant() : 0);
  }

  dominant() {
    this.analyser.getFloatFrequencyData(this.spectrum);
    let best = 1;
    for (let bin = 2; bin < this.spectrum.length - 1; bin += 1) {
      if (this.spectrum[bin] > this.spectrum[best]) {
        best = bin;
      }
    }
    // A parabola through the peak and its neighbours (in dB) places it between bins.
    const [left, peak, right] = [this.spectrum[best - 1], this.spectrum[best],
                                 this.spectrum[best + 1]];
    const bend = left - 2 * peak + right;
    const offset = bend < 0 ? 0.5 * (left - right) / bend : 0;
    const hz = (best + offset) * this.context.sampleRate / this.analyser.fftSize;
    return Math.round(hz);
  }

  show(level, frequency) {
    this.element.dataset.level = String(Math.round(level));
    this.element.dataset.frequency = String(frequency);
    const share = Math.min(100, Math.max(0, (level - FLOOR_DB) / -FLOOR_DB * 100));
    this.fill.style.width = `${share.toFixed(0)}%`;
    this.figure.textContent = level <= FLOOR_DB ? "—"
      : `${Math.round(level)} dB${frequency ? ` · ${frequency} Hz` : ""}`;
  }
}
