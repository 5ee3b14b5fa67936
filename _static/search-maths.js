// diffcourse: typeset the maths in the search page's results. Sphinx's search shows an excerpt of
// each page's text, where maths is still TeX between \( \) and \[ \]; this page loads no MathJax
// of its own, so without this the reader would see the TeX. On every other page it does nothing
// (Jupyter Book loads each .js file of _static/ on every page).
(() => {
  const mathjax = document.currentScript.src.replace(/_static\/search-maths\.js.*$/, "mathjax/es5/tex-chtml.js");
  document.addEventListener("DOMContentLoaded", () => {
    const results = document.getElementById("search-results");
    if (!results || window.MathJax) return;
    let queued = false;
    const typeset = () => {
      if (queued || !(window.MathJax && MathJax.typesetPromise)) return;
      queued = true;  // results arrive one by one: typeset them in batches
      setTimeout(() => { queued = false; MathJax.typesetPromise([results]).catch(() => null); }, 100);
    };
    window.MathJax = {
      tex: {tags: "none"},
      startup: {typeset: false, ready: () => { MathJax.startup.defaultReady(); typeset(); }},
    };
    const script = document.createElement("script");
    script.src = mathjax;
    script.async = true;
    document.head.appendChild(script);
    // MathJax's own output changes the list too; a second pass then finds nothing new and stops.
    new MutationObserver(typeset).observe(results, {childList: true, subtree: true});
  });
})();
