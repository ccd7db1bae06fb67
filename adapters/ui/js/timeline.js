// A list that draws only the rows in sight: a run's 10,000 events cost as much to show as 40.
// Rows have one fixed height; a spacer gives the scrollbar the whole list's height, and a small
// pool of row elements is moved and refilled as the list scrolls.

import { h } from "./dom.js";

const OVERSCAN = 8;

export class VirtualList {
  /**
   * @param options.rowHeight every row's height in pixels (the stylesheet must agree)
   * @param options.render (item, element) fills a row element for an item
   * @param options.onPick called with an item when a row is clicked or Enter is pressed on it
   * @param options.label the list's accessible name
   */
  constructor({ rowHeight, render, onPick, label }) {
    this.rowHeight = rowHeight;
    this.renderRow = render;
    this.onPick = onPick ?? (() => {});
    this.items = [];
    this.active = -1;
    this.pool = [];
    this.queued = false;
    this.follow = true; // keep the newest row in sight until the reader scrolls up
    this.spacer = h("div", { class: "vlist-spacer" });
    this.element = h(
      "div",
      {
        class: "vlist",
        tabindex: "0",
        role: "listbox",
        "aria-label": label,
        on: {
          scroll: () => {
            this.follow = this.atBottom();
            this.schedule();
          },
          keydown: (event) => this.key(event),
          click: (event) => {
            const row = event.target.closest(".vlist-row");
            if (row) this.pick(Number(row.dataset.position));
          },
        },
      },
      this.spacer,
    );
    this.resizer = new ResizeObserver(() => this.schedule());
    this.resizer.observe(this.element);
  }

  destroy() {
    this.resizer.disconnect();
  }

  /** Replaces the items (a filter changed). */
  setItems(items) {
    this.items = items;
    this.active = Math.min(this.active, items.length - 1);
    this.changed();
  }

  /** Adds items at the end (events arrived). */
  append(items) {
    for (const item of items) this.items.push(item);
    this.changed();
  }

  changed() {
    this.spacer.style.height = `${this.items.length * this.rowHeight}px`;
    this.element.dataset.count = String(this.items.length);
    if (this.follow) this.element.scrollTop = this.element.scrollHeight;
    this.schedule();
  }

  atBottom() {
    const el = this.element;
    return el.scrollHeight - el.scrollTop - el.clientHeight < this.rowHeight;
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => {
      this.queued = false;
      this.draw();
    });
  }

  draw() {
    const el = this.element;
    // A list that just shrank (a filter) may still report the old list's scroll offset.
    const bottom = Math.max(0, this.items.length * this.rowHeight - el.clientHeight);
    if (el.scrollTop > bottom) el.scrollTop = bottom;
    const top = Math.min(el.scrollTop, bottom);
    const first = Math.max(0, Math.floor(top / this.rowHeight) - OVERSCAN);
    const visible = Math.ceil(el.clientHeight / this.rowHeight) + 2 * OVERSCAN;
    const last = Math.min(this.items.length, first + visible);
    const needed = last - first;
    while (this.pool.length < needed) {
      const row = h("div", { class: "vlist-row", role: "option" });
      this.pool.push(row);
      el.append(row);
    }
    this.pool.forEach((row, i) => {
      const position = first + i;
      if (i >= needed) {
        row.hidden = true;
        return;
      }
      row.hidden = false;
      row.style.transform = `translateY(${position * this.rowHeight}px)`;
      const item = this.items[position];
      if (row.dataset.position !== String(position) || row.item !== item) {
        row.dataset.position = String(position);
        row.item = item;
        this.renderRow(item, row);
      }
      const active = position === this.active;
      row.classList.toggle("active", active);
      row.setAttribute("aria-selected", String(active));
    });
  }

  pick(position) {
    if (position < 0 || position >= this.items.length) return;
    this.active = position;
    this.scrollTo(position);
    this.schedule();
    this.onPick(this.items[position]);
  }

  scrollTo(position) {
    const el = this.element;
    const top = position * this.rowHeight;
    if (top < el.scrollTop) el.scrollTop = top;
    else if (top + this.rowHeight > el.scrollTop + el.clientHeight) {
      el.scrollTop = top + this.rowHeight - el.clientHeight;
    }
  }

  key(event) {
    const page = Math.max(1, Math.floor(this.element.clientHeight / this.rowHeight) - 1);
    const moves = {
      ArrowDown: this.active + 1,
      ArrowUp: this.active - 1,
      PageDown: this.active + page,
      PageUp: this.active - page,
      Home: 0,
      End: this.items.length - 1,
    };
    if (event.key in moves) {
      event.preventDefault();
      const target = Math.max(0, Math.min(this.items.length - 1, moves[event.key]));
      this.pick(target);
    } else if (event.key === "Enter" && this.active >= 0) {
      this.onPick(this.items[this.active]);
    }
  }
}
