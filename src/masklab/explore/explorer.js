/* Helpers both explorer pages use (static_page.html and server_page.html), inlined into each (pages.py):
   window.MasklabPage = {$, el, fmt, rgb}.
   $(selector, scope)          the first match in scope (default: the document)
   el(tag, attrs, kids...)     a new element: attrs 'text', 'class', 'style', 'on<event>' (a listener) or any
                               attribute (null and undefined values left out); kids are elements or strings
   fmt(value)                  a table value as text: '-' for missing and non-finite numbers, yes/no, numbers
                               to 3-4 decimals (integers as they are), objects as JSON
   rgb([r, g, b], alpha)       a CSS colour
*/
(function (root) {
  'use strict';
  function $(sel, scope) { return (scope || document).querySelector(sel); }
  function el(tag, attrs) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined) return;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else if (k === 'style') e.style.cssText = v;
      else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    });
    for (var a = 2; a < arguments.length; a++) {
      var kid = arguments[a];
      if (kid === null || kid === undefined) continue;
      e.appendChild(typeof kid === 'string' ? document.createTextNode(kid) : kid);
    }
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return '\u2013';
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    if (typeof v === 'number') {
      if (!isFinite(v)) return '\u2013';
      if (Number.isInteger(v)) return String(v);
      var a = Math.abs(v);
      return a >= 1000 ? v.toFixed(0) : a >= 1 ? v.toFixed(3) : v.toFixed(4);
    }
    return typeof v === 'object' ? JSON.stringify(v) : String(v);
  }
  function rgb(c, a) { return 'rgba(' + c[0] + ',' + c[1] + ',' + c[2] + ',' + (a === undefined ? 1 : a) + ')'; }
  root.MasklabPage = { $: $, el: el, fmt: fmt, rgb: rgb };
})(window);
