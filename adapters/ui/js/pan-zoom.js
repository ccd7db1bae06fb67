// Pan and zoom of an <svg>'s content: one `transform` on one group, written once per frame.
// The wheel zooms around the pointer, a drag on the background pans, and with the drawing
// focused the arrow keys pan, + and - zoom, 0 fits.

const MIN_SCALE = 0.05;
const MAX_SCALE = 4;
const FIT_MAX_SCALE = 1.25;
const FIT_PADDING = 24;
const PAN_STEP = 60;
// Text too small to read is not drawn (it is most of a frame's cost at 500 nodes); the
// stylesheet keys on `data-detail`.
const LESS_DETAIL = 0.55; // below this scale: no conditions or type/status lines
const LEAST_DETAIL = 0.3; // below this: no labels either; the glyph and the box remain

export class PanZoom {
  /**
   * @param svg the drawing
   * @param viewport the group whose transform is the view
   * @param options.bounds () => {minX, minY, maxX, maxY}: what fit() must show
   * @param options.grabs (target) => whether a drag starting there pans (not on a node)
   */
  constructor(svg, viewport, { bounds, grabs }) {
    this.svg = svg;
    this.viewport = viewport;
    this.bounds = bounds;
    this.grabs = grabs;
    this.x = 0;
    this.y = 0;
    this.k = 1;
    this.queued = false;
    this.listen();
  }

  size() {
    const box = this.svg.getBoundingClientRect();
    return { width: box.width || 800, height: box.height || 480 };
  }

  fit() {
    const { width, height } = this.size();
    const { minX, minY, maxX, maxY } = this.bounds();
    const fits = Math.min((width - 2 * FIT_PADDING) / (maxX - minX), (height - 2 * FIT_PADDING) / (maxY - minY));
    this.k = Math.min(FIT_MAX_SCALE, Math.max(MIN_SCALE, fits));
    this.x = (width - (maxX - minX) * this.k) / 2 - minX * this.k;
    this.y = (height - (maxY - minY) * this.k) / 2 - minY * this.k;
    this.apply();
  }

  /** Puts the drawing's point (x, y) in the middle of the view. */
  centre(x, y) {
    const { width, height } = this.size();
    this.x = width / 2 - x * this.k;
    this.y = height / 2 - y * this.k;
    this.apply();
  }

  zoomBy(factor, at = null) {
    const { width, height } = this.size();
    const px = at ? at.x : width / 2;
    const py = at ? at.y : height / 2;
    const k = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.k * factor));
    const ratio = k / this.k;
    this.x = px - (px - this.x) * ratio;
    this.y = py - (py - this.y) * ratio;
    this.k = k;
    this.apply();
  }

  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.apply();
  }

  /** However many wheel or pointer events came, the transform is written once per frame. */
  apply() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => {
      this.queued = false;
      const { x, y, k } = this;
      this.viewport.setAttribute("transform", `translate(${x.toFixed(1)} ${y.toFixed(1)}) scale(${k.toFixed(4)})`);
      this.svg.dataset.scale = k.toFixed(4);
      const detail = k < LEAST_DETAIL ? "least" : k < LESS_DETAIL ? "less" : "full";
      if (this.svg.dataset.detail !== detail) this.svg.dataset.detail = detail;
    });
  }

  listen() {
    const svg = this.svg;
    svg.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const box = svg.getBoundingClientRect();
        const factor = Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015));
        this.zoomBy(factor, { x: event.clientX - box.left, y: event.clientY - box.top });
      },
      { passive: false },
    );
    let drag = null;
    svg.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 || !this.grabs(event.target)) return;
      drag = { x: event.clientX, y: event.clientY, pointer: event.pointerId };
      svg.setPointerCapture(event.pointerId);
      svg.classList.add("panning");
    });
    svg.addEventListener("pointermove", (event) => {
      if (!drag || event.pointerId !== drag.pointer) return;
      this.panBy(event.clientX - drag.x, event.clientY - drag.y);
      drag.x = event.clientX;
      drag.y = event.clientY;
    });
    const endDrag = () => {
      drag = null;
      svg.classList.remove("panning");
    };
    svg.addEventListener("pointerup", endDrag);
    svg.addEventListener("pointercancel", endDrag);
    svg.addEventListener("keydown", (event) => this.key(event));
  }

  key(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      ArrowLeft: () => this.panBy(PAN_STEP, 0),
      ArrowRight: () => this.panBy(-PAN_STEP, 0),
      ArrowUp: () => this.panBy(0, PAN_STEP),
      ArrowDown: () => this.panBy(0, -PAN_STEP),
      "+": () => this.zoomBy(1.25),
      "=": () => this.zoomBy(1.25),
      "-": () => this.zoomBy(0.8),
      0: () => this.fit(),
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  }
}
